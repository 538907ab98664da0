"""Why the gateway closes a connection, and how each transport says so."""
import attrs


@attrs.frozen
class CloseReason:
    ws_code: int
    ws_reason: str | None
    sse_event: str | None  # a last RIG event sent on SSE before the stream ends


SHUTDOWN = CloseReason(1001, "Going away.", None)
SESSION_KILLED = CloseReason(1000, "Session killed.", "rig.session_killed")
TOKEN_EXPIRED = CloseReason(1008, "Token expired.", "rig.session_killed")
