"""Stateful wrappers around the lossy part of a pipeline.

``ef``: error feedback. Adds the client's residual before compressing and returns what compression dropped
(x + residual - decoded) as the next residual. ``ef(decay)`` multiplies the stored residual by ``decay`` in
[0, 1] first: under rare participation residuals go stale (the FEMNIST probe saw them grow to ~3x one round's
update), and a decay below 1 bounds them.

:class:`Stateless` is what a pipeline without ``ef`` uses: the same contract, no state (not a registered stage).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .contract import LOSSLESS, Compressed, Lossy, Properties, State, Stateful
from .layout import Layout
from .spec import Float


class Stateless(Stateful):
    """No state: compress the tensors as they are; any ``state`` given is ignored and none is returned."""

    name = "stateless"
    properties = LOSSLESS

    def encode(self, inner: Lossy, tensors: Mapping[str, np.ndarray], layout: Layout, state, seed):
        flat = layout.flatten(tensors)
        layout.check_finite(flat)
        return inner.compress(flat, layout, seed), None


class ErrorFeedback(Stateful):
    """``ef[(decay)]``: residual in, compressed (x + decay * residual), new residual out."""

    name = "ef"
    args = (Float("decay", 0.0, 1.0, 1.0),)
    decay: float
    properties = Properties(lossless=True, unbiased=True, deterministic=True, error_feedback=True)

    def encode(
        self, inner: Lossy, tensors: Mapping[str, np.ndarray], layout: Layout, state: State | None, seed: int
    ) -> tuple[Compressed, State]:
        if state is not None and set(state) != set(tensors):
            raise ValueError(f"state names {sorted(state)} differ from tensor names {sorted(tensors)}")
        flat = layout.flatten(tensors, state, self.decay)
        layout.check_finite(flat, " (after adding the error-feedback residual)")
        c = inner.compress(flat, layout, seed)
        recon = inner.reconstruct(c)
        if c.idx is not None:
            flat[c.idx] -= recon
        elif np.may_share_memory(flat, c.symbols):  # identity hands back flat's own bits: keep them intact
            flat = flat - recon
        else:
            np.subtract(flat, recon, out=flat)
        return c, layout.split(flat)
