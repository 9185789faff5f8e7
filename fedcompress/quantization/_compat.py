"""One place that talks to `torch.ao.quantization`, deprecated in torch 2.13 but shipped and working.

FX graph mode is used for the CNNs (per-channel int8 weights, calibrated activations) because it quantizes
an unmodified model (no QuantStub edits to the models file); dynamic quantization is used for LSTMs, whose
activations are recurrent. The warnings torch prints on every call are silenced here, and only here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from fedcompress.errors import ConfigError

ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's deprecation chatter about torch.ao / quantized tensors / jit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor, torch.quantize_per_channel.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        warnings.filterwarnings("ignore", message=".*must run observer before calling calculate_qparams.*")
        yield


def use_engine(engine: str) -> str:
    """Select the quantized kernel library; x86/fbgemm for servers and PCs, qnnpack for ARM phones."""
    if engine not in ENGINES:
        raise ConfigError(f"quantization engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"quantization engine {engine!r} is not built into this torch; "
            f"available: {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = engine
    return engine
