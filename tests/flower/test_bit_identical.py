"""Refactoring must not change results: short seeded runs end with the same model, bit for bit, as the code
before the strategy was split into wrappers (digests computed with that code, commit 8e15a35).

Re-pinned deliberately once (the lossy-downlink cases): the server now applies each decoded update to the
global model (`global + delta`) instead of to the client's lossy copy of it (`received + delta`); the identity
case, where the two are the same, kept its digest.

FedAdam with a compressed uplink is deliberately not pinned: before the split, a client at first contact got
FedAdam's float64 model and its reply was rejected ("payload dtype float64, model expects float32"); the model
is now sent in the model's own dtype, so those replies count.

The digests were computed on an AMD EPYC machine; torch's float kernels round differently on other CPU families
(an Intel Xeon gives other bits for every case, the code unchanged), so elsewhere the test checks that the same
seeded run gives the same bits twice, and the pinned digests only where they were made."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedcompress.flower.records import record_to_numpy, state_to_numpy
from fedcompress.task import make_model
from tests.flower.test_fedcompress_strategy import SPARSE, _config, _run


def _digest(record) -> str:  # noqa: ANN001
    h = hashlib.sha256()
    for k, v in record_to_numpy(record).items():
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.tobytes())
    return h.hexdigest()[:16]


CASES = {
    "shared-initial": (dict(uplink=SPARSE, downlink="topk(0.1) > uniform(4) > entropy"), 3, True, "1ed86373d1428eb3"),
    "fedprox": (dict(uplink=SPARSE, downlink="topk(0.1) > uniform(4) > entropy", strategy="fedprox"), 3, False, "4a90fbcf1cfdb52f"),
    "krum": (dict(uplink="uniform(4) > entropy", downlink="uniform(8) > entropy", strategy="krum", **{"clients-per-round": 3}), 3, False, "9c454661e77878f4"),
    "identity": ({}, 2, False, "85eb4618b987280c"),
}  # fmt: skip


PINNED_ON = "AMD EPYC"


def _cpu() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def _final_digest(kw: dict, rounds: int, shared: bool) -> str:
    cfg = _config(**kw)
    initial = {k: v.copy() for k, v in state_to_numpy(make_model(cfg)).items()} if shared else None
    strategy, *_, result = _run(cfg, rounds=rounds, shared_initial=initial)
    assert not any(strategy.rejections.values())
    return _digest(result.arrays)


@pytest.mark.parametrize("case", list(CASES))
def test_final_model_digest_unchanged(case: str) -> None:
    kw, rounds, shared, expected = CASES[case]
    got = _final_digest(kw, rounds, shared)
    assert _final_digest(kw, rounds, shared) == got  # seeded runs are reproducible, bit for bit, on any CPU
    if PINNED_ON in _cpu():
        assert got == expected
