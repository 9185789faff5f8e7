"""Every registered stage held to the contract of its kind (bases in ``stage_contracts.py``)."""

from __future__ import annotations

from stage_contracts import (
    CoderContract,
    QuantizerContract,
    SparsifierContract,
    StageContract,
    StatefulContract,
)

from fedcompress.codecs import STAGES

# ---------------------------------------------------------------- sparsifiers


class TestTopK(SparsifierContract):
    stage, example = "topk", "topk(0.1)"
    bad_args = (("topk(0)", "frac"), ("topk(1.5)", "frac"), ("topk(0.1, per_layer=3)", "per_layer"))


class TestTopKPerLayer(SparsifierContract):
    stage, example = "topk", "topk(0.02, per_layer)"


class TestTopKAll(SparsifierContract):
    stage, example = "topk", "topk(1.0)"  # lossless: the index "all" mode


class TestRandK(SparsifierContract):
    stage, example = "randk", "randk(0.1)"
    bad_args = (("randk(-0.1)", "frac"), ("randk()", "frac"))


class TestThreshold(SparsifierContract):
    stage, example = "threshold", "threshold(0.01)"
    bad_args = (("threshold(-1)", "t"), ("threshold(t=x)", "t"))


# ---------------------------------------------------------------- quantizers


class TestIdentity(QuantizerContract):
    stage, example = "identity", "identity"


class TestFP16(QuantizerContract):
    stage, example = "fp16", "fp16"
    max_rel_error = 2.0**-11


class TestBF16(QuantizerContract):
    stage, example = "bf16", "bf16"
    max_rel_error = 2.0**-8


class TestUniform4(QuantizerContract):
    stage, example = "uniform", "uniform(4)"
    rms_rel_error = 0.35
    bad_args = (
        ("uniform(0)", "bits"),
        ("uniform(4.5)", "bits"),
        ("uniform()", "bits"),
        ("uniform(4, block=1)", "block"),
        ("uniform(4, block=8, per_channel)", "per_channel"),
        ("uniform(4, fast)", "stochastic"),
    )


class TestUniform8(QuantizerContract):
    stage, example = "uniform", "uniform(8)"
    rms_rel_error = 0.04


class TestUniform1(QuantizerContract):
    stage, example = "uniform", "uniform(1)"


class TestUniformStochastic(QuantizerContract):
    stage, example = "uniform", "uniform(4, stochastic)"
    max_rel_error = 1 / 7  # one step of a max-abs grid


class TestUniformBlock(QuantizerContract):
    stage, example = "uniform", "uniform(6, block=64)"
    max_rel_error = 1 / 62  # half a step of each block's max-abs grid


class TestUniformPerChannel(QuantizerContract):
    stage, example = "uniform", "uniform(4, per_channel)"
    rms_rel_error = 0.35


class TestQSGD(QuantizerContract):
    stage, example = "qsgd", "qsgd(8)"
    bad_args = (("qsgd(0)", "levels"), ("qsgd(40000)", "levels"))


class TestTernary(QuantizerContract):
    stage, example = "ternary", "ternary"
    rms_rel_error = 0.75


class TestTernaryStochastic(QuantizerContract):
    stage, example = "ternary", "ternary(stochastic)"
    max_rel_error = 1.0
    bad_args = (("ternary(fast)", "stochastic"),)


class TestSign(QuantizerContract):
    stage, example = "sign", "sign"
    bad_args = (("sign(2)", "unexpected"),)


class TestKMeans(QuantizerContract):
    stage, example = "kmeans", "kmeans(16)"
    rms_rel_error = 0.3
    bad_args = (("kmeans(1)", "k"), ("kmeans(70000)", "k"))


class TestPQ(QuantizerContract):
    stage, example = "pq", "pq(2, 64)"
    rms_rel_error = 0.3
    bad_args = (("pq(4)", "k"), ("pq(65, 4)", "subvec"), ("pq(2, 5000)", "k"))


# ---------------------------------------------------------------- lossless coders


class TestRaw(CoderContract):
    stage, example = "raw", "raw"
    bad_args = (("raw(1)", "unexpected"),)


class TestZstd(CoderContract):
    stage, example = "zstd", "zstd"
    bad_args = (("zstd(30)", "level"), ("zstd(0)", "level"))


class TestZstdLevel(CoderContract):
    stage, example = "zstd", "zstd(9)"


class TestEntropy(CoderContract):
    stage, example = "entropy", "entropy"


# ---------------------------------------------------------------- stateful wrappers


class TestErrorFeedbackSparse(StatefulContract):
    stage, example = "ef", "topk(0.1) > ef > uniform(4) > entropy"
    bad_args = (("ef(2)", "decay"), ("ef(-0.1)", "decay"))


class TestErrorFeedbackDense(StatefulContract):
    stage, example = "ef", "ef"  # identity keeps flat's bits: the residual must not alias the payload


class TestErrorFeedbackDecay(StatefulContract):
    stage, example = "ef", "ef(0.5) > sign"


class TestErrorFeedbackCast(StatefulContract):
    stage, example = "ef", "randk(0.2) > ef > fp16 > zstd"


# ---------------------------------------------------------------- meta


def _contract_classes(base: type) -> list[type]:
    out = []
    for cls in base.__subclasses__():
        out.append(cls)
        out.extend(_contract_classes(cls))
    return out


def test_every_registered_stage_has_a_contract_test() -> None:
    tested = {cls.stage for cls in _contract_classes(StageContract) if cls.__name__.startswith("Test")}
    missing = sorted(set(STAGES) - tested)
    assert not missing, f"stages without a contract test class: {missing}"
    unknown = sorted(tested - set(STAGES))
    assert not unknown, f"contract tests for unregistered stages: {unknown}"


def test_each_contract_class_uses_the_base_of_its_stage_kind() -> None:
    bases = {
        "sparsify": SparsifierContract,
        "quantize": QuantizerContract,
        "code": CoderContract,
        "feedback": StatefulContract,
    }
    for cls in _contract_classes(StageContract):
        if cls.__name__.startswith("Test"):
            assert issubclass(cls, bases[STAGES[cls.stage].kind]), cls.__name__
