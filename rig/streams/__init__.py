"""Redis Streams: consume CloudEvents from backends (and, later, proxy requests)."""
