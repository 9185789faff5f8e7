"""Spec strings and TOML tables: canonical forms, properties, and errors that name the stage and allowed
values."""

from __future__ import annotations

import pytest

from fedcompress.codecs import STAGES, Pipeline


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", "identity"),
        ("identity", "identity"),
        (
            "  TopK( 0.01 ) >EF> uniform(4,stochastic) > entropy ",
            "topk(0.01) > ef > uniform(4, stochastic) > entropy",
        ),
        ("topk(frac=0.5, per_layer)", "topk(0.5, per_layer)"),
        ("uniform(bits=8, block=256) > zstd(3)", "uniform(8, block=256) > zstd"),
        ("uniform(4, per_channel=true)", "uniform(4, per_channel)"),
        ("topk(0.3) > identity > raw", "topk(0.3)"),
        ("ef > topk(0.1) > sign", "topk(0.1) > ef > sign"),
        ("zstd(19)", "zstd(19)"),
        ("ef(0.5) > qsgd(4)", "ef(0.5) > qsgd(4)"),
    ],
)
def test_canonical_spec(text: str, canonical: str) -> None:
    pipe = Pipeline.parse(text)
    assert pipe.spec == canonical
    assert Pipeline.parse(canonical) == pipe


def test_identity_and_properties() -> None:
    assert Pipeline.parse("").is_identity and Pipeline.parse("identity").is_identity
    assert not Pipeline.parse("zstd").is_identity and not Pipeline.parse("identity > ef").is_identity
    props = Pipeline.parse("topk(0.01) > ef > uniform(4, stochastic) > entropy").properties
    assert (props.lossless, props.unbiased, props.deterministic, props.error_feedback, props.sparse) == (
        False,
        False,
        False,
        True,
        True,
    )
    assert Pipeline.parse("randk(0.1) > qsgd(4) > entropy").properties.unbiased
    assert Pipeline.parse("entropy").properties.lossless
    assert not Pipeline.parse("uniform(16)").properties.lossless


def test_from_toml() -> None:
    want = Pipeline.parse("topk(0.01) > ef > uniform(4, stochastic) > entropy")
    assert Pipeline.from_toml({"spec": want.spec}) == want
    table = {
        "stages": [
            "topk(0.01)",
            "ef",
            {"name": "uniform", "bits": 4, "stochastic": True},
            {"name": "entropy"},
        ]
    }
    assert Pipeline.from_toml(table) == want
    with pytest.raises(ValueError, match="exactly one"):
        Pipeline.from_toml({"spec": "ef", "stages": []})
    with pytest.raises(ValueError, match="name"):
        Pipeline.from_toml({"stages": [{"bits": 4}]})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bogus(3)", ["bogus", "topk", "uniform"]),
        ("uniform(0)", ["uniform", "1..16"]),
        ("uniform(17)", ["uniform", "1..16"]),
        ("uniform(4.5)", ["uniform", "1..16"]),
        ("uniform()", ["uniform", "missing bits"]),
        ("uniform(4, fast)", ["uniform", "stochastic", "per_channel"]),
        ("uniform(4, block=1)", ["uniform", "2..16777216"]),
        ("uniform(4, block=8, per_channel)", ["uniform", "exclude"]),
        ("topk(0)", ["topk", "(0.0, 1.0]"]),
        ("topk(1.5)", ["topk", "(0.0, 1.0]"]),
        ("randk(-0.1)", ["randk", "(0.0, 1.0]"]),
        ("topk(0.1, 2)", ["topk", "unexpected"]),
        ("topk(0.1, foo=1)", ["topk", "unknown keyword"]),
        ("threshold(-1)", ["threshold", "t"]),
        ("qsgd(0)", ["qsgd", "1..32767"]),
        ("kmeans(1)", ["kmeans", "2..65536"]),
        ("pq(4)", ["pq", "missing k"]),
        ("zstd(30)", ["zstd", "1..22"]),
        ("ef(2)", ["ef", "[0.0, 1.0]"]),
        ("fp16(2)", ["fp16", "unexpected"]),
        ("uniform(4) > topk(0.1)", ["out of order"]),
        ("entropy > uniform(4)", ["out of order"]),
        ("uniform(4) > fp16", ["two quantize"]),
        ("topk(0.1) > randk(0.1)", ["two sparsify"]),
        ("topk(0.1", ["cannot read"]),
        ("topk(0.1) >", ["cannot read"]),
        ("topk(inf)", ["topk"]),
    ],
)
def test_spec_errors_name_stage_and_allowed_values(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        Pipeline.parse(text)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_every_registered_stage_parses_from_its_usage_name() -> None:
    examples = {
        "topk": "topk(0.1)",
        "randk": "randk(0.1)",
        "threshold": "threshold(0.1)",
        "uniform": "uniform(4)",
        "qsgd": "qsgd(4)",
        "kmeans": "kmeans(4)",
        "pq": "pq(2, 4)",
        "ef": "ef",
        "zstd": "zstd",
    }
    for name in STAGES:
        spec = examples.get(name, name)
        assert name in Pipeline.parse(spec).spec or spec in ("identity", "raw")


def test_declared_arguments_drive_construction_spec_equality_and_repr() -> None:
    from fedcompress.codecs.entropy import Zstd
    from fedcompress.codecs.quantize import Uniform
    from fedcompress.codecs.sparsify import TopK

    assert TopK(0.5) == TopK(frac=0.5) == Pipeline.parse("topk(0.5)").sparsifier
    assert TopK(1).spec == "topk(1.0)" and TopK(0.1, True).spec == "topk(0.1, per_layer)"
    assert Uniform(4, block=64).spec == "uniform(4, block=64)" and Uniform(4, block=64).grouping == (
        "block",
        64,
    )
    assert repr(Zstd()) == "Zstd('zstd')" and Zstd(level=3) == Zstd() and Zstd(5) != Zstd()
    assert repr(Pipeline.parse("zstd")) == "Pipeline('zstd')" and Pipeline.parse("zstd") != Zstd()
    assert hash(Uniform(4, stochastic=True)) == hash(Pipeline.parse("uniform(4, stochastic)").quantizer)
    for make, words in [
        (lambda: TopK(2.0), ["topk", "frac", "(0.0, 1.0]"]),
        (lambda: TopK(), ["topk", "missing frac"]),
        (lambda: TopK(0.1, per_layer=1), ["topk", "per_layer", "true or false"]),
        (lambda: Uniform(4, bogus=1), ["uniform", "unknown keyword", "bogus"]),
        (lambda: Uniform("4"), ["uniform", "bits", "number"]),
        (lambda: Zstd(1, 2), ["zstd", "at most 1"]),
    ]:
        with pytest.raises(ValueError) as info:
            make()
        for word in words:
            assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_usage_is_generated_from_the_declaration(name: str) -> None:
    cls = STAGES[name]
    assert cls.usage.startswith(name)
    for arg in cls.args:
        assert arg.name in cls.usage


def test_long_hostile_arguments_give_short_errors() -> None:
    with pytest.raises(ValueError) as info:
        Pipeline.parse(f"uniform(4, {'x' * 5000})")
    assert len(str(info.value)) < 300
