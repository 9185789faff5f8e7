"""Behaviour that the byte accounting alone would not catch: scales, error feedback, selection, the
benchmark."""

from __future__ import annotations

import json

import numpy as np
from codecs_contract import bias_ratio, flat, model

from fedcompress.codecs import Pipeline, decode
from fedcompress.codecs.sparsify import topk_positions


def test_topk_matches_exact_selection_on_large_input() -> None:
    x = np.random.default_rng(0).standard_t(3, 1_000_003).astype(np.float32)
    for k in (1, 10, 10_000, 300_000):
        want = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :])
        np.testing.assert_array_equal(topk_positions(x, k), want)


def test_global_topk_keeps_exactly_k_and_the_largest() -> None:
    tensors = model()
    x = flat(tensors)
    out = flat(decode(Pipeline.parse("topk(0.05)").encode(tensors).payload))
    kept = np.flatnonzero(out)
    assert kept.size == round(0.05 * x.size)
    assert np.abs(x[kept]).min() >= np.abs(np.delete(x, kept)).max()
    np.testing.assert_array_equal(out[kept], x[kept])


def test_no_kept_value_rounds_to_zero_and_signs_survive() -> None:
    tensors = model(1)
    x = flat(tensors)
    for spec in (
        "topk(0.05) > uniform(4)",
        "topk(0.05) > uniform(2) > entropy",
        "threshold(0.02) > uniform(3)",
    ):
        out = flat(decode(Pipeline.parse(spec).encode(tensors).payload))
        sel = Pipeline.parse(spec.split(" >")[0]).encode(tensors).payload
        kept = np.flatnonzero(flat(decode(sel)))
        assert np.all(out[kept] != 0), spec
        assert np.all(np.sign(out[kept]) == np.sign(x[kept])), spec


def test_scales_beat_max_abs_on_heavy_tails() -> None:
    tensors = model(2)
    x = flat(tensors)
    out = flat(decode(Pipeline.parse("uniform(4)").encode(tensors).payload))
    naive = np.concatenate(
        [
            np.rint(t / (np.abs(t).max() / 7)) * (np.abs(t).max() / 7)
            for t in tensors.values()
            for t in [t.reshape(-1)]
        ]
    )
    assert np.mean((out - x) ** 2) < 0.7 * np.mean((naive - x) ** 2)
    assert np.mean(out == 0) < 0.7 * np.mean(naive == 0)


def test_error_feedback_delivers_the_update_over_rounds() -> None:
    tensors = model(3)
    pipe = Pipeline.parse("topk(0.1) > ef > uniform(2) > entropy")
    state, total = None, np.zeros(sum(t.size for t in tensors.values()))
    rounds = 50
    for r in range(rounds):
        res = pipe.encode(tensors, state, seed=r)
        state = res.state
        total += flat(decode(res.payload))
    x = flat(tensors)
    np.testing.assert_allclose(total + flat(state), rounds * x, rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(total / rounds - x) < 0.1 * np.linalg.norm(x)
    without = flat(decode(Pipeline.parse("topk(0.1) > uniform(2)").encode(tensors).payload))
    assert np.linalg.norm(without - x) > 5 * np.linalg.norm(total / rounds - x)


def test_decay_shrinks_stale_residuals() -> None:
    tensors = {"w": np.zeros(100, np.float32)}
    state = {"w": np.ones(100, np.float32)}
    res = Pipeline.parse("topk(0.01) > ef(0.5)").encode(tensors, state)
    assert np.isclose(res.state["w"].sum() + decode(res.payload)["w"].sum(), 50.0)


def test_randk_sends_no_indices_and_is_unbiased() -> None:
    tensors = model(4)
    res = Pipeline.parse("randk(0.1) > uniform(8) > entropy").encode(tensors, seed=11)
    assert res.index_bytes == 0 and res.metadata_bytes < 200
    small = {"w": model(5)["fc.weight"][:4]}
    assert bias_ratio(Pipeline.parse("randk(0.25)"), small, 300) < 2.0
    assert bias_ratio(Pipeline.parse("topk(0.25)"), small, 30) > 10  # the check has power


def test_metadata_share_at_4_bits_is_small() -> None:
    rng = np.random.default_rng(6)
    shapes = {
        "conv": (64, 32, 3, 3),
        "conv.bias": (64,),
        "fc": (512, 1024),
        "fc.bias": (512,),
        "head": (10, 512),
    }
    tensors = {k: (rng.standard_t(3, s) * 0.01).astype(np.float32) for k, s in shapes.items()}
    for spec in ("topk(0.01) > ef > uniform(4) > entropy", "uniform(4) > entropy"):
        res = Pipeline.parse(spec).encode(tensors)
        assert res.metadata_bytes / res.num_bytes < 0.04, spec  # 7 KB payload; 10M params: see the bench


def test_bench_smoke(capsys) -> None:
    from fedcompress.bench.codecs import main

    summary = main(["--params", "200000", "--repeat", "1", "--quick"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == summary
    assert set(summary) == {
        "sparse_mb_per_s",
        "dense_mb_per_s",
        "metadata_share",
        "coded_over_entropy",
        "copy_mb_per_s",
        "sparse_copy_ratio",
        "dense_copy_ratio",
    }
    assert summary["coded_over_entropy"] < 1.1
