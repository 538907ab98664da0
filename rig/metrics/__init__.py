"""Prometheus metrics: plain counters on the hot path, read by collectors at scrape time."""
