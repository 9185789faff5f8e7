"""The one error a decoder raises: the payload (not the caller's code) is at fault."""

from __future__ import annotations


class PayloadError(ValueError):
    """A payload that cannot be decoded safely; ``reason`` says why in plain words.

    It subclasses ``ValueError`` so code that already guards decoding with ``except ValueError`` stays
    correct.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
