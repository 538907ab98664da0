"""The ``subscriptions`` query parameter, decoded and validated once per distinct text.

In a reconnect storm every client of one app sends the same parameter; decoding
its JSON and validating each subscription was about a tenth of an SSE connect's
Python. Texts that parse are remembered, a bounded number of them and only short
ones, so that no client can grow the memory; a text that fails is never
remembered, and fails again with the same error each time.
"""
from rig.memo import Memo
from rig.subscriptions.model import decode_subscriptions_param, parse_subscriptions, unique


class SubscriptionParams:
    """``text -> (decoded JSON, unique subscriptions)`` for the texts seen lately."""

    def __init__(self, max_entries=512, max_text=4096):
        self._max_text = max_text
        self._known = Memo(max_entries)

    def known(self, text, allow_wrapped):
        """``(decoded, subscriptions)`` for *text* if it parsed before, else None."""
        return self._known.get((text, allow_wrapped))

    def decode(self, text, allow_wrapped):
        """The decoded JSON; ValueError when *text* is not JSON."""
        return decode_subscriptions_param(text, allow_wrapped=allow_wrapped)

    def parse(self, text, allow_wrapped, decoded):
        """The unique subscriptions of *decoded* (decoded from *text*), as a tuple;
        SubscriptionError when one is not valid. Remembered for the next time."""
        subscriptions = tuple(unique(parse_subscriptions(decoded)))
        if len(text) <= self._max_text:
            self._known.remember((text, allow_wrapped), (decoded, subscriptions))
        return subscriptions
