"""The one way untrusted JSON is decoded: bounded nesting, finite numbers, one-sentence errors.

Every request body and query parameter that carries JSON goes through
:func:`loads`, so that a document nested 100,000 deep or a number like
``1e999`` is a 400 with a sentence everywhere, never a RecursionError, an
``Infinity`` that cannot be encoded again, or a 500.
"""
import json

MAX_DEPTH = 128  # far below the interpreter's recursion limit, far above real documents


class JSONInputError(ValueError):
    """Not acceptable JSON; ``str()`` says why in a few words. A syntax error also keeps
    the decoder's ``msg``, ``lineno`` and ``colno``."""

    msg = lineno = colno = None


def _reject_constant(name):
    raise JSONInputError(f"{name} is not a valid JSON value")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONInputError(f"the number {text[:20]} is out of range")
    return value


# the decoder is immutable configuration, made once: json.loads with these arguments
# would build a new one for every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _syntax_error(error):
    invalid = JSONInputError(str(error))
    invalid.msg, invalid.lineno, invalid.colno = error.msg, error.lineno, error.colno
    return invalid


def loads(data, max_depth=MAX_DEPTH):
    """Decode *data* (str, or UTF-8 bytes); JSONInputError saying why it is not acceptable."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONInputError("it is not valid UTF-8") from None
    try:
        value = _DECODER.decode(data)
    except JSONInputError:
        raise
    except json.JSONDecodeError as error:
        # made elsewhere: an exception held in a local of this frame, which its traceback
        # holds, would be a reference cycle left for the garbage collector, at every
        # malformed document
        raise _syntax_error(error) from None
    except RecursionError:
        raise JSONInputError("nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise JSONInputError(str(error).split("; ")[0]) from None
    # a document with no more brackets than the limit cannot nest deeper (no walk needed)
    if data.count("[") + data.count("{") > max_depth and not within_depth(value, max_depth):
        raise JSONInputError(f"nested too deeply (more than {max_depth} levels)")
    return value


def within_depth(value, max_depth=MAX_DEPTH):
    """Whether *value* nests arrays and objects at most *max_depth* deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return False
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return True
