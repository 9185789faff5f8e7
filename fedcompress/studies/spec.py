"""Study specs: a TOML file -> a validated list of cells (one Flower run each).

Everything is checked before the first run starts, because a typo found after hours of simulation wastes the
hours: every error names the file, the TOML line and the key.

Layout of a spec::

    [study]   name, description, [study.target] <dataset> = <accuracy in (0, 1]>
    [base]    run-config values shared by every cell
    [grid]    run-config key = [values...]; the cartesian product, in the order written
    [[cells]] explicit extra combinations (base + the table); a list value makes the table a small grid of
              its own (`seed = [0, 1, 2]`: three cells), so a baseline with its own strategy settings is one table
    [quick]   run-config overrides for the CI variant; optional [quick.grid], [quick.target], [[quick.cells]]

Precedence for one cell: base < grid combination (or explicit cell) < quick overrides (with --quick).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig, check_preset, defaults, untiered_as_made
from fedcompress.errors import ConfigError
from fedcompress.studies.baselines import STRATEGY_PARAMS

STUDIES_DIR = Path(__file__).resolve().parent / "specs"  # shipped specs (package data)
TOP_TABLES = ("study", "base", "grid", "cells", "quick")
STUDY_KEYS = ("name", "description", "target")
QUICK_TABLES = ("grid", "target", "cells")
RESERVED = ("run-dir",)  # the runner chooses each cell's folder
PIPELINE_KEYS = ("uplink", "downlink")
IDENTITY = "identity"
HASH_EXCLUDED = ("run-dir", "data-dir")  # where things live does not change what a run computes


class SpecError(ConfigError):
    """A study spec that cannot run; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Cell:
    """One run of a study: its run-config overrides and the id of its folder (readable slug + config hash)."""

    overrides: dict[str, Any]
    config_hash: str
    cell_id: str
    num_rounds: int

    @property
    def dataset(self) -> str:
        return str(self.overrides["dataset"])


@dataclass
class Study:
    """A parsed, validated spec and the cells of the selected variant (full or --quick)."""

    path: Path
    name: str
    description: str
    quick: bool
    targets: dict[str, float]
    cells: list[Cell]
    raw: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name}-quick" if self.quick else self.name


def resolve_spec_path(spec: str | Path) -> Path:
    """A path, or the name of a shipped spec (`femnist_uplink` -> fedcompress/studies/specs/femnist_uplink.toml)."""
    path = Path(spec)
    if path.exists():
        return path
    for candidate in (STUDIES_DIR / f"{spec}.toml", STUDIES_DIR / str(spec)):
        if candidate.exists():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.toml")))
    raise SpecError(f"{spec}: no such study spec (shipped specs: {shipped})")


def load_study(spec: str | Path, *, quick: bool = False) -> Study:
    """Parse and validate the whole spec (both variants), then return the cells of the selected one."""
    path = resolve_spec_path(spec)
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    where = _Locator(path, text)
    _check_structure(raw, where)
    if quick and "quick" not in raw:
        raise SpecError(f"{path}: --quick needs a [quick] table of overrides")
    variants = {False: _expand(raw, where, quick=False)}
    if "quick" in raw:  # checked even for a full run: CI's quick run then also vouches for the full spec
        variants[True] = _expand(raw, where, quick=True)
    targets, cells = variants[quick]
    study = raw["study"]
    return Study(path, study["name"], study.get("description", ""), quick, targets, cells, raw)


# ------------------------------------------------------------------ structure


def _check_structure(raw: dict[str, Any], where: _Locator) -> None:
    for key in raw:
        if key not in TOP_TABLES:
            raise where.error(
                None, key, f"unknown table [{key}]{_hint(key, TOP_TABLES)}; expected {TOP_TABLES}"
            )
    study = raw.get("study")
    if not isinstance(study, dict):
        raise SpecError(f"{where.path}: missing [study] table (name, description, target)")
    for key in study:
        if key not in STUDY_KEYS:
            raise where.error("study", key, f"unknown key {key!r} in [study]{_hint(key, STUDY_KEYS)}")
    name = study.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise where.error("study", "name", f"[study] name = {name!r}: expected a folder-safe string")
    if not isinstance(study.get("description", ""), str):
        raise where.error("study", "description", "[study] description: expected a string")
    _check_targets(study.get("target", {}), "study.target", where)
    for table in ("base", "grid"):
        if not isinstance(raw.get(table, {}), dict):
            raise where.error(None, table, f"[{table}] must be a table")
    _check_run_keys(raw.get("base", {}), "base", where)
    _check_grid(raw.get("grid", {}), "grid", where)
    _check_cells(raw.get("cells", []), "cells", where)
    if not raw.get("grid") and not raw.get("cells"):
        raise where.error(
            None, "grid", "empty grid: [grid] has no axes and there are no [[cells]], so nothing to run"
        )
    quick = raw.get("quick")
    if quick is not None:
        if not isinstance(quick, dict):
            raise where.error(None, "quick", "[quick] must be a table")
        _check_run_keys({k: v for k, v in quick.items() if k not in QUICK_TABLES}, "quick", where)
        _check_grid(quick.get("grid", {}), "quick.grid", where)
        _check_targets(quick.get("target", {}), "quick.target", where)
        _check_cells(quick.get("cells", []), "quick.cells", where)


def _check_targets(targets: Any, table: str, where: _Locator) -> None:
    if not isinstance(targets, dict):
        raise where.error(
            table.rsplit(".", 1)[0], "target", f"[{table}] must be a table of dataset = accuracy"
        )
    for dataset, value in targets.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise where.error(
                table, dataset, f"[{table}] {dataset} = {value!r}: target accuracy must be a number in (0, 1]"
            )


def _check_run_keys(values: dict[str, Any], table: str, where: _Locator) -> None:
    """Names only (values are checked per cell): unknown keys and keys the runner owns."""
    valid = RunConfig.keys()
    known = defaults()
    for key in values:
        if key in RESERVED:
            raise where.error(table, key, f"[{table}] {key!r} is set by the runner (use --out)")
        if key not in valid or key not in known:
            raise where.error(table, key, f"[{table}] unknown run-config key {key!r}{_hint(key, valid)}")


def _check_grid(grid: Any, table: str, where: _Locator) -> None:
    if not isinstance(grid, dict):
        raise where.error(None, table, f"[{table}] must be a table of key = [values]")
    _check_run_keys(grid, table, where)
    for key, values in grid.items():
        if not isinstance(values, list):
            raise where.error(
                table, key, f"[{table}] {key} = {values!r}: grid values must be a list, e.g. [{values!r}]"
            )
        if not values:
            raise where.error(
                table, key, f"[{table}] {key} = []: empty grid axis, the product would have no cells"
            )


def _check_cells(cells: Any, table: str, where: _Locator) -> None:
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise where.error(None, table.split(".")[-1], f"[[{table}]] must be an array of tables")
    for i, cell in enumerate(cells):
        if not cell:
            raise where.error(None, table, f"[[{table}]] #{i + 1} is empty")
        _check_run_keys(cell, f"{table}#{i}", where)
        for key, value in cell.items():
            if value == []:
                message = f"[[{table}]] #{i + 1} {key} = []: empty list, the cell would have no runs"
                raise where.error(f"{table}#{i}", key, message)


# ------------------------------------------------------------------ expansion


def _expand(raw: dict[str, Any], where: _Locator, *, quick: bool) -> tuple[dict[str, float], list[Cell]]:
    """The cells of one variant, each resolved by RunConfig (types, ranges), dataset and pipelines checked."""
    base = dict(raw.get("base", {}))
    grid = dict(raw.get("grid", {}))
    explicit = list(raw.get("cells", []))
    targets = {k: float(v) for k, v in raw["study"].get("target", {}).items()}
    forced: dict[str, Any] = {}
    had_grid = bool(grid) or (quick and bool(raw["quick"].get("grid")))
    if quick:
        q = raw["quick"]
        forced = {k: v for k, v in q.items() if k not in QUICK_TABLES}
        grid.update(q.get("grid", {}))
        for key in forced:  # a quick scalar collapses the grid axis of the same key
            grid.pop(key, None)
        explicit = list(q.get("cells", explicit))
        targets.update({k: float(v) for k, v in q.get("target", {}).items()})
    tables = ["quick", "quick.grid", "grid", "base"] if quick else ["grid", "cells", "base"]

    combos: list[tuple[dict[str, Any], list[str]]] = []
    keys = list(grid)
    # No [grid] at all (only [[cells]]): no grid cell either, not the base alone as a surprise cell.
    product = itertools.product(*(grid[k] for k in keys)) if had_grid else ()
    for values in product:
        combos.append(({**base, **dict(zip(keys, values, strict=True)), **forced}, tables))
    for i, cell in enumerate(explicit):
        table = f"{'quick.' if quick and 'cells' in raw['quick'] else ''}cells#{i}"
        for one in _cell_product(cell):
            combos.append(({**base, **one, **forced}, [table, *tables]))

    cells: list[Cell] = []
    seen: set[str] = set()
    for overrides, search in combos:
        cfg = _resolve(overrides, search, where)
        _check_cell(cfg, overrides, search, where)
        if cfg.dataset not in targets:
            raise SpecError(
                f"{where.path}: no target accuracy for dataset {cfg.dataset!r}"
                f"{' in the --quick variant' if quick else ''}: add [{'quick' if quick else 'study'}.target] "
                f"{cfg.dataset} = 0.9"
            )
        digest = config_hash(overrides)
        if digest in seen:
            continue
        seen.add(digest)
        cells.append(Cell(overrides, digest, f"{slug(cfg)}-{digest}", cfg.num_server_rounds))
    return targets, cells


def _cell_product(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """A [[cells]] table with list values -> one table per combination (no run-config value is a list)."""
    axes = [k for k, v in cell.items() if isinstance(v, list)]
    combos = itertools.product(*(cell[k] for k in axes))
    return [{**cell, **dict(zip(axes, values, strict=True))} for values in combos]


def _resolve(overrides: dict[str, Any], search: list[str], where: _Locator) -> RunConfig:
    try:
        check_preset(overrides)  # a preset and a pipeline both written: only the overrides can tell
        return RunConfig.from_run_config({**defaults(), **overrides})
    except ConfigError as err:
        match = re.search(r"config key '([^']+)'", str(err))
        key = match.group(1) if match else None
        raise where.error_in(search, key, str(err)) from None


_checked_pipelines: dict[str, str] = {}


def _check_cell(cfg: RunConfig, overrides: dict[str, Any], search: list[str], where: _Locator) -> None:
    """Dataset name and codec pipelines: cheap checks RunConfig does not do (no data is loaded here)."""
    from fedcompress.data.registry import DATASETS, HUB_PREFIX

    if cfg.dataset not in DATASETS and not cfg.dataset.startswith(HUB_PREFIX):
        valid = ", ".join(sorted(DATASETS))
        raise where.error_in(search, "dataset", f"unknown dataset {cfg.dataset!r}; expected one of {valid}")
    for key in PIPELINE_KEYS:
        spec = getattr(cfg, key)
        problem = check_pipeline(spec)
        if problem:
            raise where.error_in(search, key, f"{key} pipeline {spec!r}: {problem}", value=spec)


def check_pipeline(spec: str) -> str:
    """'' if the codec library accepts `spec` (or is not importable: then checked at run time), else why."""
    if spec == IDENTITY:
        return ""
    if spec not in _checked_pipelines:
        try:
            from fedcompress.codecs import Pipeline
        except ImportError:
            return ""
        try:
            Pipeline.parse(spec)
            _checked_pipelines[spec] = ""
        except (ValueError, TypeError) as err:
            _checked_pipelines[spec] = str(err)
    return _checked_pipelines[spec]


def config_hash(overrides: dict[str, Any]) -> str:
    """Hash of the resolved run config without paths; recomputable from a run dir's config.json (resume)."""
    cfg = RunConfig.from_run_config({**defaults(), **overrides}, strict=False)
    body = untiered_as_made({k: v for k, v in cfg.as_run_config().items() if k not in HASH_EXCLUDED})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]


def slug(cfg: RunConfig) -> str:
    """A readable folder name: dataset, partitioning, strategy (not FedAvg), pipelines, seed (the appended hash
    tells the rest). FedAvg adds nothing, so the ids of studies made before strategies varied stay the same."""
    part = cfg.partitioning + (f"{cfg.dirichlet_alpha:g}" if cfg.partitioning == "dirichlet" else "")
    bits = [cfg.dataset, part]
    if cfg.strategy != "fedavg":  # `--only fedadam0.01` picks a baseline's seeds
        params = STRATEGY_PARAMS.get(cfg.strategy, ())
        bits.append(cfg.strategy + "-".join(f"{getattr(cfg, k.replace('-', '_')):g}" for k, _ in params))
    bits.append(f"up-{_pipe_slug(cfg.uplink)}")
    if cfg.downlink != IDENTITY:
        bits.append(f"down-{_pipe_slug(cfg.downlink)}")
    bits.append(f"s{cfg.seed}")
    return "_".join(bits)[:90]


def _pipe_slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", spec).strip("-") or "identity"


def _hint(key: str, valid: Any) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------ locating lines


class _Locator:
    """Finds the line of `key` inside a table by scanning the text (tomllib does not keep positions)."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.table_of: list[str] = []  # each line's table ("" = top level, "cells#0" = 1st [[cells]])
        counts: dict[str, int] = {}
        current = ""
        for line in self.lines:
            m = self.HEADER.match(line)
            if m:
                name = m.group(2).replace(" ", "")
                if m.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    name = f"{name}#{counts[name]}"
                current = name
            self.table_of.append(current)

    def line_of(self, table: str | None, key: str | None) -> int | None:
        """1-based line: `key =` in `table`, else a `table.key` header, `key` anywhere, the table header."""
        if key is not None:
            pat = re.compile(rf'^\s*("?){re.escape(key)}\1\s*=')
            for i, line in enumerate(self.lines):
                if pat.match(line) and (table is None or self.table_of[i] == table):
                    return i + 1
            sub = f"{table}.{key}" if table else key
            for i, line in enumerate(self.lines):
                m = self.HEADER.match(line)
                if m and m.group(2).replace(" ", "") in (sub, key):
                    return i + 1
            inline = re.compile(rf'(^|[\s{{,])("?){re.escape(key)}\2\s*=')
            for i, line in enumerate(self.lines):
                if inline.search(line):
                    return i + 1
        if table:
            for i, name in enumerate(self.table_of):
                if name == table:
                    return i + 1
        return None

    def error(self, table: str | None, key: str | None, message: str) -> SpecError:
        line = self.line_of(table, key)
        return SpecError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")

    def error_in(self, tables: list[str], key: str | None, message: str, value: Any = None) -> SpecError:
        """The first of `tables` (most specific first) setting `key` (to `value`, if given) gives the line."""
        for table in tables:
            line = self._line_with_value(table, key, value)
            if line:
                return SpecError(f"{self.path}:{line}: [{table.split('#')[0]}] {message}")
        return SpecError(f"{self.path}: {message}")

    def _line_with_value(self, table: str, key: str | None, value: Any) -> int | None:
        if key is None:
            return None
        pat = re.compile(rf'^\s*("?){re.escape(key)}\1\s*=')
        for i, line in enumerate(self.lines):
            in_table = self.table_of[i] == table and pat.match(line)
            if in_table and (value is None or str(value) in self._value_text(i)):
                return i + 1
        return None

    def _value_text(self, i: int) -> str:
        """The line and, for a multi-line array, the lines up to its closing bracket."""
        text = self.lines[i]
        j = i
        while text.count("[") > text.count("]") and j + 1 < len(self.lines):
            j += 1
            text += "\n" + self.lines[j]
        return text
