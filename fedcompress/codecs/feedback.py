"""``ef``: error feedback. Marks the pipeline to add the client's residual before compressing and to return
what compression dropped (x + residual - decoded) as the next residual.

``ef(decay)`` multiplies the stored residual by ``decay`` in [0, 1] first: under rare participation
residuals go
stale (the FEMNIST probe saw them grow to ~3x one round's update), and a decay below 1 bounds them.
"""

from __future__ import annotations

from .contract import Properties, Stage
from .spec import Args, StageCall, format_call


class ErrorFeedback(Stage):
    """Error-feedback marker; the pipeline does the arithmetic."""

    name = "ef"
    kind = "feedback"
    usage = "ef[(decay)] with decay in [0, 1]"

    def __init__(self, decay: float = 1.0) -> None:
        self.decay = float(decay)

    @classmethod
    def from_call(cls, call: StageCall) -> ErrorFeedback:
        a = Args(call, cls.usage)
        decay = a.take_float("decay", 0.0, 1.0, default=1.0, key="decay")
        a.done()
        return cls(decay)

    @property
    def spec(self) -> str:
        return format_call(self.name, [self.decay] if self.decay != 1.0 else [])

    @property
    def properties(self) -> Properties:
        return Properties(lossless=True, unbiased=True, deterministic=True, error_feedback=True)
