"""The runner without Flower: a stub simulate() writes run dirs, so resume and failures test fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedcompress.errors import ConfigError
from fedcompress.launch.simulation import SimulationError
from fedcompress.studies.runner import run_study

from .conftest import write_run

SPEC = """\
[study]
name = "stub"

[study.target]
digits = 0.5

[base]
dataset = "digits"
partitioning = "iid"
num-partitions = 4
clients-per-round = 2
num-server-rounds = 2
learning-rate = 0.1

[grid]
uplink = ["identity"]
seed = [0, 1, 2]
"""


class Stub:
    """Writes a complete run dir like the app would, or fails for the seeds in `fail`."""

    def __init__(self, fail: tuple[int, ...] = (), flaky: tuple[int, ...] = ()) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail, self.flaky = fail, list(flaky)

    def __call__(self, overrides: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls.append(overrides)
        kwargs["echo"]("round    1/2  acc 0.3")
        if overrides["seed"] in self.fail:
            raise SimulationError("run did not complete (boom)")
        if overrides["seed"] in self.flaky:
            self.flaky.remove(overrides["seed"])
            raise SimulationError("run did not complete (SuperLink unavailable)")
        config = {k: v for k, v in overrides.items() if k != "run-dir"}
        write_run(Path(overrides["run-dir"]), config, [0.1, 0.3, 0.6], 1000, 1000)
        return {"status": "complete"}


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "stub.toml"
    path.write_text(text)
    return path


def _statuses(out: Path) -> list[str]:
    return [c["status"] for c in json.loads((out / "study.json").read_text())["cells"]]


def test_resume_skips_complete_cells(tmp_path: Path) -> None:
    out, stub = tmp_path / "out", Stub()
    first = run_study(_spec(tmp_path), out=out, simulate=stub, progress=False)
    assert len(stub.calls) == 3 and first["counts"] == {"complete": 3, "skipped": 0, "failed": 0}
    assert _statuses(out) == ["complete"] * 3
    again = Stub()
    second = run_study(_spec(tmp_path), out=out, simulate=again, progress=False)
    assert again.calls == [] and second["counts"]["skipped"] == 3
    # a changed config is a different cell: it runs, the finished ones with the old config stay on disk
    changed = Stub()
    run_study(_spec(tmp_path, SPEC.replace("learning-rate = 0.1", "learning-rate = 0.2")), out=out,
              simulate=changed, progress=False)  # fmt: skip
    assert len(changed.calls) == 3
    assert len([p for p in out.iterdir() if p.is_dir()]) == 6


def test_an_incomplete_or_foreign_run_dir_is_rerun(tmp_path: Path) -> None:
    out, stub = tmp_path / "out", Stub()
    run_study(_spec(tmp_path), out=out, simulate=stub, progress=False)
    cells = sorted(p for p in out.iterdir() if p.is_dir())
    summary = cells[0] / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "status": "failed"}))
    meta = json.loads((cells[1] / "config.json").read_text())
    meta["config"]["learning-rate"] = 0.3  # the folder holds some other config: not this cell's result
    (cells[1] / "config.json").write_text(json.dumps(meta))
    again = Stub()
    run_study(_spec(tmp_path), out=out, simulate=again, progress=False)
    assert sorted(Path(c["run-dir"]).name for c in again.calls) == sorted(p.name for p in cells[:2])


def test_a_failed_cell_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    out, stub = tmp_path / "out", Stub(fail=(1,))
    index = run_study(_spec(tmp_path), out=out, simulate=stub, progress=False, retries=0)
    assert len(stub.calls) == 3 and index["counts"]["failed"] == 1
    assert _statuses(out) == ["complete", "failed", "complete"]
    failed = next(c for c in json.loads((out / "study.json").read_text())["cells"] if c["status"] == "failed")
    assert "boom" in failed["error"] and "boom" in (out / failed["id"] / "FAILED").read_text()
    retry = Stub()
    run_study(_spec(tmp_path), out=out, simulate=retry, progress=False)
    assert [c["seed"] for c in retry.calls] == [1]
    assert _statuses(out) == ["complete"] * 3 and not (out / failed["id"] / "FAILED").exists()


def test_only_selects_cells(tmp_path: Path) -> None:
    out, stub = tmp_path / "out", Stub()
    run_study(_spec(tmp_path), out=out, only="_s2-", simulate=stub, progress=False)
    assert [c["seed"] for c in stub.calls] == [2]
    assert _statuses(out) == ["pending", "pending", "complete"]
    with pytest.raises(ConfigError, match="matches no cell"):
        run_study(_spec(tmp_path), out=out, only="nosuch", simulate=stub, progress=False)


def test_index_records_spec_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_study(_spec(tmp_path), out=out, simulate=Stub(), progress=True)
    index = json.loads((out / "study.json").read_text())
    assert index["study"]["name"] == "stub" and index["study"]["targets"] == {"digits": 0.5}
    assert index["spec"]["grid"]["seed"] == [0, 1, 2]
    env = index["runner_environment"]
    assert env["flwr"].startswith("1.42") and env["cpu_count"] and env["git_commit"]


def test_a_broken_simulation_is_retried(tmp_path: Path) -> None:
    out, stub = tmp_path / "out", Stub(fail=(0,), flaky=(2,))
    index = run_study(_spec(tmp_path), out=out, simulate=stub, progress=False, retries=1)
    assert [c["seed"] for c in stub.calls] == [0, 0, 1, 2, 2]  # a hard failure is tried twice, then recorded
    assert index["counts"] == {"complete": 2, "skipped": 0, "failed": 1}
    with pytest.raises(ConfigError):  # not a SimulationError: not retried, and (here) not caught either
        run_study(_spec(tmp_path), out=out, only="nomatch", simulate=stub, progress=False)
