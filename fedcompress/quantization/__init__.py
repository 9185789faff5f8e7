"""Model quantization: post-training int8, quantization-aware training, k-means weight sharing, real sizes."""

from fedcompress.quantization.kmeans import SharedModel, SharedTensor, kmeans_1d, kmeans_share, share_tensor
from fedcompress.quantization.ptq import int8_bytes, load_int8, quantize_int8
from fedcompress.quantization.qat import convert_qat, prepare_qat, qat_fine_tune
from fedcompress.quantization.size import (
    saved_size,
    state_dict_size,
    to_torchscript,
    torchscript_bytes,
    torchscript_size,
)

__all__ = [
    "SharedModel",
    "SharedTensor",
    "convert_qat",
    "int8_bytes",
    "load_int8",
    "kmeans_1d",
    "kmeans_share",
    "prepare_qat",
    "qat_fine_tune",
    "quantize_int8",
    "saved_size",
    "share_tensor",
    "state_dict_size",
    "to_torchscript",
    "torchscript_bytes",
    "torchscript_size",
]
