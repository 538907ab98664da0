"""The API gateway: API definitions, matching, forwarding and the management API."""
