"""Defaults that the settings and the objects they configure share (one place each)."""

MAX_CONNECTIONS_PER_MINUTE = 5000  # RIG's per-node limit on new connections
HEARTBEAT_INTERVAL = 15.0  # seconds between WebSocket pings and SSE heartbeat comments
SEND_QUEUE_LIMIT = 1 << 20  # bytes queued per connection before it is too slow
RECOVERY_HISTORY_SIZE = 1000  # events kept for reconnecting clients
RECOVERY_HISTORY_AGE = 300.0  # seconds an event is kept for them
LISTEN_BACKLOG = 4096  # pending connections per listener; Linux caps it at net.core.somaxconn
