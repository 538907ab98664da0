"""Distributed tracing: W3C Trace Context everywhere, OpenTelemetry spans when exported."""
