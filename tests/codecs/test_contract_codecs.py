"""Every stage and the main pipelines, each held to the shared CodecContract."""

from __future__ import annotations

from codecs_contract import CodecContract


class TestIdentity(CodecContract):
    spec = "identity"


class TestZstd(CodecContract):
    spec = "zstd"


class TestEntropyLossless(CodecContract):
    spec = "entropy"


class TestTopKAll(CodecContract):
    spec = "topk(1.0) > entropy"  # keeps everything: lossless through the index "all" mode


class TestFP16(CodecContract):
    spec = "fp16 > entropy"
    max_rel_error = 2.0**-11


class TestBF16(CodecContract):
    spec = "bf16 > zstd"
    max_rel_error = 2.0**-8


class TestUniform4(CodecContract):
    spec = "uniform(4) > entropy"
    rms_rel_error = 0.35


class TestUniform8(CodecContract):
    spec = "uniform(8)"
    rms_rel_error = 0.04


class TestUniform16(CodecContract):
    spec = "uniform(16) > zstd"
    rms_rel_error = 1e-3


class TestUniform4Stochastic(CodecContract):
    spec = "uniform(4, stochastic)"
    max_rel_error = 1 / 7  # one step of a max-abs grid


class TestUniform2Stochastic(CodecContract):
    spec = "uniform(2, stochastic) > entropy"
    max_rel_error = 1.0


class TestUniform1Stochastic(CodecContract):
    spec = "uniform(1, stochastic)"
    max_rel_error = 2.0


class TestUniformPerChannel(CodecContract):
    spec = "uniform(4, per_channel) > entropy"
    rms_rel_error = 0.25


class TestUniformBlock(CodecContract):
    spec = "uniform(6, block=64)"
    max_rel_error = 1 / 62  # half a step of each block's max-abs grid


class TestQSGD(CodecContract):
    spec = "qsgd(8) > entropy"


class TestTernary(CodecContract):
    spec = "ternary > entropy"
    rms_rel_error = 0.75


class TestTernaryStochastic(CodecContract):
    spec = "ternary(stochastic)"
    max_rel_error = 1.0


class TestSign(CodecContract):
    spec = "sign > ef"
    rms_rel_error = 0.9


class TestKMeans(CodecContract):
    spec = "kmeans(16) > entropy"
    rms_rel_error = 0.3


class TestPQ(CodecContract):
    spec = "pq(2, 64)"
    rms_rel_error = 0.3


class TestTopK(CodecContract):
    spec = "topk(0.1)"
    rms_rel_error = 0.6


class TestTopKPerLayer(CodecContract):
    spec = "topk(0.1, per_layer) > uniform(8) > entropy"
    rms_rel_error = 0.6


class TestRandK(CodecContract):
    spec = "randk(0.5)"


class TestThreshold(CodecContract):
    spec = "threshold(0.01) > fp16"
    rms_rel_error = 0.3


class TestMainSparse(CodecContract):
    spec = "topk(0.05) > ef > uniform(4) > entropy"
    rms_rel_error = 0.8


class TestSparseStochastic(CodecContract):
    spec = "topk(0.1) > ef > uniform(4, stochastic) > entropy"
    rms_rel_error = 0.7


class TestSTC(CodecContract):
    spec = "topk(0.05) > ef > ternary > entropy"
    rms_rel_error = 0.9


class TestRandKStochastic(CodecContract):
    spec = "randk(0.3) > uniform(4, stochastic) > zstd"


class TestSparseKMeans(CodecContract):
    spec = "topk(0.2) > kmeans(8) > entropy"
    rms_rel_error = 0.5


class TestSparsePQ(CodecContract):
    spec = "threshold(0.02) > ef(0.9) > pq(2, 16)"
