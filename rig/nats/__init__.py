"""NATS: a client on the reactor, the event source and the proxy target."""
