"""Cross-node events through a broker (Redis Pub/Sub or NATS), the mesh as the fallback."""
