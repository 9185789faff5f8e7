"""One error hierarchy: every error fedcompress raises on purpose derives from `FedCompressError`.

Callers catch by class, never by name. Each subclass says whose fault it is: a value the user gave
(`ConfigError`), bytes a peer sent (`PayloadError`), or a run that did not finish (`RunError`).
"""

from __future__ import annotations


class FedCompressError(Exception):
    """Base of every error fedcompress raises deliberately."""


class ConfigError(FedCompressError, ValueError):
    """A configuration value, name or path that fedcompress cannot use; the message names it."""


class PayloadError(FedCompressError, ValueError):
    """A payload that cannot be decoded or used safely; ``reason`` says why in plain, short words.

    Distinct from `ConfigError`: the bytes a peer sent are at fault, not the caller's code, so the server
    rejects and counts the reply and the round goes on. Reasons are capped so a hostile payload cannot make
    the log or the ledger grow.
    """

    MAX_REASON = 300

    def __init__(self, reason: str) -> None:
        reason = str(reason)
        if len(reason) > self.MAX_REASON:
            reason = reason[: self.MAX_REASON - 15] + "... (truncated)"
        super().__init__(reason)
        self.reason = reason


class RunError(FedCompressError, RuntimeError):
    """A run (simulation, deployment, study cell) that ended without a complete run directory."""
