"""The live dashboard at ``GET :4010/dashboard`` (DASHBOARD_ENABLED): a sampler of the
gateway's own counters, the routes that serve its figures, and the page (package data)."""
