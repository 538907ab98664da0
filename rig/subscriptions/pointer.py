"""RFC 6901 JSON pointers, parsed once and resolved many times."""

MISSING = object()


def parse_pointer(text):
    """Split a pointer such as ``/data/name`` into its reference tokens.

    Raises ValueError for anything that is not a non-empty pointer.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("a JSON pointer must be a non-empty string")
    if not text.startswith("/"):
        raise ValueError(f"JSON pointer {text!r} must start with '/'")
    return tuple(
        token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/")
    )


def resolve(tokens, document):
    """The value *tokens* point at in *document*, or MISSING."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token[0] == "0"):
                return MISSING
            position = int(token)
            if position >= len(value):
                return MISSING
            value = value[position]
        else:
            return MISSING
    return value
