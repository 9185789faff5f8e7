"""Spec validation: every error is found before anything runs and names the file line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedcompress.config import RunConfig, defaults
from fedcompress.studies.runner import run_study
from fedcompress.studies.spec import STUDIES_DIR, SpecError, load_study

GOOD = """\
[study]
name = "t"
description = "test"

[study.target]
digits = 0.5

[base]
dataset = "digits"
partitioning = "iid"
num-partitions = 4
clients-per-round = 2
num-server-rounds = 2

[grid]
uplink = ["identity", "fp16"]
seed = [0, 1]

[quick]
num-server-rounds = 1

[quick.grid]
seed = [0]
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _fails(tmp_path: Path, text: str, *patterns: str) -> str:
    with pytest.raises(SpecError) as info:
        load_study(_spec(tmp_path, text))
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    return message


def test_good_spec_expands_the_grid(tmp_path: Path) -> None:
    study = load_study(_spec(tmp_path, GOOD))
    assert [c.overrides["uplink"] for c in study.cells] == ["identity", "identity", "fp16", "fp16"]
    assert len({c.cell_id for c in study.cells}) == 4 and all(c.num_rounds == 2 for c in study.cells)
    quick = load_study(_spec(tmp_path, GOOD), quick=True)
    assert [(c.overrides["uplink"], c.overrides["seed"], c.num_rounds) for c in quick.cells] == [
        ("identity", 0, 1), ("fp16", 0, 1)
    ]  # fmt: skip
    assert quick.label == "t-quick"


def test_unknown_key_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace('uplink = ["identity", "fp16"]', 'uplinks = ["identity", "fp16"]')
    _fails(tmp_path, text, rf":{_line_of(text, 'uplinks')}:", "uplinks", "did you mean 'uplink'")
    text = GOOD.replace("num-partitions = 4", "num-partitions = 4\nnum-rounds = 3")
    _fails(tmp_path, text, rf":{_line_of(text, 'num-rounds')}:", r"\[base\]", "num-rounds")
    text = GOOD.replace('description = "test"', 'description = "test"\ntargets = 1')
    _fails(tmp_path, text, rf":{_line_of(text, 'targets = 1')}:", "targets")
    text = GOOD + "\n[grids]\nseed = [1]\n"
    _fails(tmp_path, text, rf":{_line_of(text, '[grids]')}:", "unknown table")


def test_empty_grid(tmp_path: Path) -> None:
    text = GOOD.split("[grid]")[0] + "[grid]\n"
    _fails(tmp_path, text, "empty grid")
    text = GOOD.replace("seed = [0, 1]", "seed = []")
    _fails(tmp_path, text, rf":{_line_of(text, 'seed = []')}:", "empty grid axis")
    text = GOOD.replace("seed = [0, 1]", "seed = 0")
    _fails(tmp_path, text, rf":{_line_of(text, 'seed = 0')}:", "must be a list")


def test_target_must_be_a_number(tmp_path: Path) -> None:
    text = GOOD.replace("digits = 0.5", 'digits = "high"')
    _fails(tmp_path, text, rf":{_line_of(text, 'digits = ')}:", r"study\.target", "digits", "number")
    text = GOOD.replace("digits = 0.5", "digits = 80")
    _fails(tmp_path, text, rf":{_line_of(text, 'digits = ')}:", r"\(0, 1\]")
    text = GOOD.replace('dataset = "digits"', 'dataset = "mnist"')
    _fails(tmp_path, text, "no target accuracy for dataset 'mnist'")


def test_unknown_dataset_and_pipeline_and_bad_value(tmp_path: Path) -> None:
    text = GOOD.replace("seed = [0, 1]", 'seed = [0, 1]\ndataset = ["digits", "nosuchdata"]')
    _fails(tmp_path, text, rf":{_line_of(text, 'nosuchdata')}:", "unknown dataset 'nosuchdata'")
    pytest.importorskip("fedcompress.codecs")
    text = GOOD.replace('"fp16"]', '"fp16",\n    "bogus(3)",\n]')
    # RunConfig or the study's own check names it, depending on who validates pipelines first
    _fails(tmp_path, text, rf":{_line_of(text, 'uplink = ')}:", "uplink", r"'bogus\(3\)'", "unknown stage")
    text = GOOD.replace("num-server-rounds = 2", "num-server-rounds = 2\nlearning-rate = -1")
    _fails(tmp_path, text, rf":{_line_of(text, 'learning-rate')}:", "learning-rate")
    text = GOOD.replace("clients-per-round = 2", "clients-per-round = 9")
    _fails(tmp_path, text, rf":{_line_of(text, 'clients-per-round')}:", "num-partitions")
    text = GOOD.replace("num-partitions = 4", 'num-partitions = 4\nrun-dir = "x"')
    _fails(tmp_path, text, rf":{_line_of(text, 'run-dir')}:", "set by the runner")


def test_quick_variant_is_checked_too(tmp_path: Path) -> None:
    text = GOOD.replace("num-server-rounds = 1", "num-server-rounds = 0")
    _fails(tmp_path, text, rf":{_line_of(text, 'num-server-rounds = 0')}:", r"\[quick\]", "num-server-rounds")


def test_nothing_runs_on_a_bad_spec(tmp_path: Path) -> None:
    text = GOOD.replace("seed = [0, 1]", "seed = []")

    def never(*args: object, **kwargs: object) -> dict:
        raise AssertionError("simulate must not be called")

    with pytest.raises(SpecError):
        run_study(_spec(tmp_path, text), out=tmp_path / "out", simulate=never, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_cell_with_lists_is_a_small_grid(tmp_path: Path) -> None:
    """One [[cells]] table per baseline: its server settings and seeds as lists (what femnist_ratios uses)."""
    cells = """
[[cells]]
uplink = "identity"
strategy = "fedadam"
server-learning-rate = [0.001, 0.01]
seed = [0, 1, 2]
"""
    study = load_study(_spec(tmp_path, GOOD.replace("[quick]", cells + "\n[quick]")))
    adam = [c.overrides for c in study.cells if c.overrides.get("strategy") == "fedadam"]
    assert [(o["server-learning-rate"], o["seed"]) for o in adam] == [
        (lr, seed) for lr in (0.001, 0.01) for seed in (0, 1, 2)
    ]
    assert len(study.cells) == 4 + 6
    ids = [c.cell_id for c in study.cells]
    # the strategy in the id, so --only finds a baseline's seeds
    assert sum("_fedadam0.001_up-identity_" in i for i in ids) == 3
    assert sum("_iid_up-" in i for i in ids) == 4  # FedAvg cells keep the ids they had
    only_cells = GOOD.replace("[grid]", "[[cells]]").replace(
        'uplink = ["identity", "fp16"]', 'uplink = "fp16"'
    )
    study = load_study(_spec(tmp_path, only_cells))  # no [grid]: the cells alone, not the base as one more
    assert [(c.overrides["uplink"], c.overrides["seed"]) for c in study.cells] == [("fp16", 0), ("fp16", 1)]
    text = GOOD.replace("[quick]", cells.replace("[0, 1, 2]", "[]") + "\n[quick]")
    _fails(tmp_path, text, rf":{_line_of(text, 'seed = []')}:", "empty list")


def test_preset_cells(tmp_path: Path) -> None:
    """A preset and the same pipelines written out are one cell; a preset beside a pipeline names its line."""
    from fedcompress.codecs.presets import PRESETS

    light = PRESETS["light"]
    cells = f"""
[[cells]]
compression = "light"
seed = 0

[[cells]]
uplink = "{light.uplink}"
downlink = "{light.downlink}"
seed = 0
"""
    base = GOOD.replace('uplink = ["identity", "fp16"]', 'compression = ["none"]')
    study = load_study(_spec(tmp_path, base.replace("[quick]", cells + "\n[quick]")))
    assert len(study.cells) == 2 + 1  # none x seeds 0, 1; light once
    clash = GOOD.replace("num-server-rounds = 2", 'num-server-rounds = 2\ndownlink = "identity"')
    clash = clash.replace("[quick]", '[[cells]]\ncompression = "strong"\nseed = 0\n\n[quick]')
    line = _line_of(clash, "compression = ")
    _fails(tmp_path, clash, rf":{line}:", "'compression' = 'strong'", "'downlink'")


@pytest.mark.parametrize("path", sorted(STUDIES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_specs_are_valid(path: Path) -> None:
    full, quick = load_study(path), load_study(path, quick=True)
    assert len(full.cells) >= 1 and 1 <= len(quick.cells) <= 3
    assert all(c.overrides["dataset"] == "digits" and c.num_rounds <= 5 for c in quick.cells)
    assert "Expected run time on 2 CPU cores" in path.read_text()
    resolved = [RunConfig.from_run_config({**defaults(), **c.overrides}) for c in full.cells]
    # a codec study: an fp32 reference must be a cell
    if any(c.uplink != resolved[0].uplink for c in resolved):
        assert any(c.uplink == c.downlink == "identity" for c in resolved)
