"""Update codecs: numpy tensors in, one self-describing byte payload out (no Flower imports here).

from fedcompress.codecs import Pipeline, decode, PayloadError
pipe = Pipeline.parse("topk(0.01) > ef > uniform(4, stochastic) > entropy")
res = pipe.encode(tensors, state=residual, seed=round_seed)
tensors_hat = decode(res.payload, expected={name: (shape, "float32"), ...})
"""

from .contract import EncodeResult, Properties
from .errors import PayloadError
from .pipeline import DEFAULT_MAX_OUTPUT_BYTES, STAGES, Pipeline, decode

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "STAGES",
    "EncodeResult",
    "PayloadError",
    "Pipeline",
    "Properties",
    "decode",
]
