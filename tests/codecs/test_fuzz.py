"""Fuzzing ``decode``: every case either raises PayloadError (reason <= 300 characters, built short) or decodes
to finite float32 tensors with exactly the expected names and shapes; nothing else is raised, nothing hangs.

A bounded quick variant of ``python -m fedcompress.bench.fuzz`` (mutations of real payloads of every registered
stage, CRC32 recomputed so inner parsers are reached) plus property-based cases from hypothesis. The long run:
``nice -n 19 python -m fedcompress.bench.fuzz --cases-per-stage 10000`` (docs/results/fuzz_codecs.txt).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcompress.bench import fuzz
from fedcompress.codecs import STAGES, PayloadError, Pipeline, decode, wire

QUICK = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CASE_SECONDS = 2.0


@pytest.fixture(scope="module")
def corpus() -> fuzz.Corpus:
    return fuzz.Corpus.build()


def assert_fine(payload: bytes, expected: dict = fuzz.EXPECTED) -> fuzz.Outcome:
    outcome = fuzz.check(payload, expected, time_limit=CASE_SECONDS)
    assert outcome.kind in ("rejected", "accepted"), (outcome.kind, outcome.detail)
    return outcome


def test_every_registered_stage_is_fuzzed() -> None:
    assert set(fuzz.SPECS) == set(STAGES)


@pytest.mark.parametrize("stage", sorted(fuzz.SPECS))
def test_mutations_of_real_payloads(corpus: fuzz.Corpus, stage: str) -> None:
    kinds: dict[str, set[str]] = {}
    for name, _spec, payload in corpus.cases(stage, 15 * len(fuzz.MUTATIONS), seed=1):
        kinds.setdefault(name, set()).add(assert_fine(payload).kind)
    assert set(kinds) == set(fuzz.MUTATIONS)
    assert all("rejected" in k for k in kinds.values())  # every class produced rejections


@QUICK
@given(
    stage=st.sampled_from(sorted(fuzz.SPECS)),
    mutation=st.sampled_from(sorted(fuzz.MUTATIONS)),
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(1, 3),
)
def test_stacked_mutations(stage: str, mutation: str, seed: int, rounds: int) -> None:
    """One to three mutations on top of each other (the later ones on the already-mutated payload when it
    still parses)."""
    corpus = _corpus()
    rng = np.random.default_rng(seed)
    rows = corpus.payloads[stage]
    spec, payload, parts = rows[int(rng.integers(len(rows)))]
    donor = rows[int(rng.integers(len(rows)))][2]
    for _ in range(rounds):
        payload = fuzz.MUTATIONS[mutation](parts, payload, donor, rng)
        try:
            parts = fuzz.split(payload)
        except Exception:  # noqa: BLE001 - not parseable by the test helper: mutate no further
            break
    assert_fine(payload)


_CORPUS: list[fuzz.Corpus] = []


def _corpus() -> fuzz.Corpus:
    if not _CORPUS:
        _CORPUS.append(fuzz.Corpus.build())
    return _CORPUS[0]


@QUICK
@given(header=st.binary(max_size=300), blob=st.binary(max_size=300), compress=st.booleans())
def test_random_header_and_sections_with_valid_prefix(header: bytes, blob: bytes, compress: bool) -> None:
    payload = fuzz.assemble(header, blob, compress)
    assert_fine(payload)
    assert_fine(payload, expected=None)


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_dims = st.lists(
    st.one_of(st.integers(0, 70), st.sampled_from([1 << 31, 1 << 40, (1 << 64) - 1])), max_size=4
)


@QUICK
@given(
    spec=st.one_of(
        st.sampled_from([s for specs in fuzz.SPECS.values() for s in specs]), st.text(max_size=40)
    ),
    tensors=st.lists(st.tuples(_names, _dims, st.sampled_from(list(wire.DTYPE_CODES))), max_size=6),
    lengths=st.lists(st.integers(0, 300), min_size=0, max_size=4),
    fill=st.binary(min_size=0, max_size=64),
    seed=st.integers(0, 2**64 - 1),
)
def test_structured_headers(spec, tensors, lengths, fill, seed) -> None:
    """Well-formed headers with arbitrary specs, names, shapes, dtypes and section lengths over filler bytes."""
    seen, infos = set(), []
    for name, dims, dtype in tensors:
        if name not in seen:
            seen.add(name)
            infos.append(wire.TensorInfo(name, tuple(dims), dtype))
    blob = (fill * (sum(lengths) // max(1, len(fill)) + 1))[: sum(lengths)] if fill else b"\0" * sum(lengths)
    try:
        raw = wire._encode_header(wire.Header(spec, seed, tuple(infos), tuple(lengths)))
    except (ValueError, UnicodeEncodeError):
        return
    payload = fuzz.assemble(raw, blob, compress=len(raw) > 96)
    own = {t.name: (t.shape, t.dtype) for t in infos}
    if all(d < 1 << 20 for t in infos for d in t.shape):
        assert_fine(payload, expected=own)
    outcome = fuzz.check(payload, expected=fuzz.EXPECTED, time_limit=CASE_SECONDS)
    assert outcome.kind in ("rejected", "accepted"), outcome.detail
    try:
        out = decode(payload, max_output_bytes=1 << 20)
    except PayloadError as exc:
        assert len(exc.reason) <= 300 and not exc.reason.endswith("(truncated)")
    else:
        assert [n for n in out] == [t.name for t in infos]


_values = st.floats(allow_nan=False, allow_infinity=False, width=32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # values near float32's max overflow in the encoder
@QUICK
@given(
    spec=st.sampled_from([s for specs in fuzz.SPECS.values() for s in specs]),
    shapes=st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3), min_size=0, max_size=4),
    data=st.data(),
    seed=st.integers(0, 2**64 - 1),
)
def test_encode_then_decode_any_update(spec, shapes, data, seed) -> None:
    """Any finite update of any shapes round-trips to finite tensors of the same names and shapes."""
    tensors = {}
    for i, shape in enumerate(shapes):
        n = int(np.prod(shape)) if shape else 1
        vals = data.draw(st.lists(_values, min_size=n, max_size=n))
        tensors[f"t{i}"] = np.array(vals, np.float32).reshape(shape)
    pipe = Pipeline.parse(spec)
    res = pipe.encode(tensors, seed=seed)
    expected = {k: (v.shape, "float32") for k, v in tensors.items()}
    try:
        out = decode(res.payload, expected=expected)
    except PayloadError as exc:  # only values that overflow float32 on reconstruction may be refused
        assert "NaN or Inf" in exc.reason, exc.reason
        return
    assert list(out) == list(tensors)
    for k, v in tensors.items():
        assert out[k].shape == v.shape and out[k].dtype == np.float32 and np.isfinite(out[k]).all()
        if pipe.properties.lossless:
            np.testing.assert_array_equal(out[k], v)


def test_nan_or_inf_updates_are_refused_by_the_encoder_not_sent() -> None:
    for spec in ("uniform(4) > entropy", "topk(0.1) > ef > ternary"):
        with pytest.raises(ValueError, match="NaN or Inf") as info:
            Pipeline.parse(spec).encode({"w": np.array([1.0, np.inf], np.float32)})
        assert not isinstance(info.value, PayloadError)


def test_bombs_are_cheap(corpus: fuzz.Corpus) -> None:
    """Header and decompression bombs: rejected, in little time and memory whatever they declare."""
    import tracemalloc

    spec, payload, parts = corpus.payloads["zstd"][0]
    bombs = [fuzz.header_bomb(200_000), fuzz.small_header_bomb()]
    for size in (1 << 20, 1 << 24):
        frame = fuzz._zero_frame(size)
        bombs.append(fuzz.rebuild(parts, sections=[*parts.sections[:2], frame]))
        bombs.append(fuzz.rebuild(parts, sections=[*parts.sections[:2], fuzz._zero_frame(size, False)]))
    tracemalloc.start()
    for bomb in bombs:
        tracemalloc.reset_peak()
        outcome = fuzz.check(bomb, time_limit=CASE_SECONDS)
        assert outcome.kind == "rejected" and outcome.seconds < 0.5, outcome
        assert tracemalloc.get_traced_memory()[1] < 2 << 20
    tracemalloc.stop()


def test_section_lengths_beyond_the_payload() -> None:
    tensors = fuzz.model(1)
    parts = fuzz.split(Pipeline.parse("topk(0.1) > uniform(4) > entropy").encode(tensors).payload)
    for lengths in ((1 << 62, 0, 0), ((1 << 64) - 1, 1, 1), (0, 0, 0, 0, 0)):
        raw = wire._encode_header(wire.Header(parts.header.spec, 0, parts.header.tensors, lengths))
        assert_fine(fuzz.assemble(raw, b"".join(parts.sections)))
    raw = bytearray(parts.raw_header)
    struct.pack_into("<I", raw, 2 + len(parts.header.spec) + 8, (1 << 32) - 1)  # tensor count
    assert_fine(fuzz.assemble(bytes(raw), b"".join(parts.sections)))
