"""Authentication and authorization: JWT validation, checks, and the session blacklist."""
