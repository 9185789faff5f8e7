"""``ef``: error feedback. Marks the pipeline to add the client's residual before compressing and to return
what compression dropped (x + residual - decoded) as the next residual.

``ef(decay)`` multiplies the stored residual by ``decay`` in [0, 1] first: under rare participation
residuals go
stale (the FEMNIST probe saw them grow to ~3x one round's update), and a decay below 1 bounds them.
"""

from __future__ import annotations

from .contract import Properties, Stage
from .spec import Float


class ErrorFeedback(Stage):
    """Error-feedback marker; the pipeline does the arithmetic."""

    name = "ef"
    kind = "feedback"
    args = (Float("decay", 0.0, 1.0, 1.0),)
    decay: float

    @property
    def properties(self) -> Properties:
        return Properties(lossless=True, unbiased=True, deterministic=True, error_feedback=True)
