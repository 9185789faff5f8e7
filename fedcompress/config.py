"""The run configuration, declared once: every key's type, default, help, flag, choices and check.

`RunConfig`'s fields are the declaration. From it come the `fedcompress simulate` flags and their help, the
defaults Flower reads (`[tool.flwr.app.config]` of the app a launcher writes; the checkout's pyproject.toml is
tested against it), and validation: an unknown key, a wrong type or a bad value fails with one message naming
the key and what is allowed. Server and client read Flower's `run_config` through `RunConfig.from_run_config`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

from fedcompress.accel import DEVICE_HELP, valid_device
from fedcompress.errors import ConfigError

PARTITIONINGS = ("natural", "iid", "dirichlet", "shards")
MODEL_CHOICES = ("auto", "cnn8", "cnn8bn", "cnn28", "cnn28bn", "cnn32", "lstm")
TIER_TRAINING = ("nested", "nested-distill", "distill", "separate", "heterofl", "deliver")
ATTACKS = ("none", "sign-flip", "scale", "random")
DEFAULT_UPLINK = "topk(0.05) > ef > uniform(4) > entropy"  # a compression framework compresses by default
DEFAULT_DOWNLINK = "topk(0.2) > uniform(4) > entropy"
CUSTOM = "custom"  # the `compression` value that means "no preset" (fedcompress.codecs.presets.CUSTOM)
PIPELINE_KEYS = ("uplink", "downlink")
_DEFAULT_PIPELINES = {"uplink": DEFAULT_UPLINK, "downlink": DEFAULT_DOWNLINK}


@dataclass(frozen=True)
class Check:
    """A test a value must pass, and the words an error uses for what would be accepted."""

    ok: Callable[[Any], bool]
    expect: str


AT_LEAST_1 = Check(lambda v: v >= 1, "an integer >= 1")
POSITIVE = Check(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = Check(lambda v: v >= 0, "a number >= 0")
UNIT_INTERVAL = Check(lambda v: 0 <= v < 1, "a number in [0, 1)")
DEVICE = Check(valid_device, DEVICE_HELP)


def key(
    default: Any,
    help: str,  # noqa: A002 - the word argparse uses
    *,
    flag: str | None = None,
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
    check: Check | None = None,
) -> Any:
    """Declare one run-config key: its default, help, an optional short flag, and what values it accepts."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "check": check})


def _presets() -> tuple[str, ...]:
    from fedcompress.codecs.presets import NAMES

    return NAMES


def _strategies() -> tuple[str, ...]:
    from fedcompress.flower.strategies import STRATEGIES

    return tuple(STRATEGIES)


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run; field names are the kebab-case run-config keys with '-' -> '_'."""

    num_server_rounds: int = key(30, "server rounds", flag="--rounds", check=AT_LEAST_1)
    clients_per_round: int = key(5, "clients sampled each round", check=AT_LEAST_1)
    local_epochs: int = key(2, "local epochs per round", check=AT_LEAST_1)
    learning_rate: float = key(0.1, "client SGD learning rate", flag="--lr", check=POSITIVE)
    momentum: float = key(0.0, "client SGD momentum", check=UNIT_INTERVAL)
    batch_size: int = key(16, "client batch size", check=AT_LEAST_1)
    dataset: str = key(
        "digits", "digits | mnist | femnist | cifar10 | shakespeare | idx | imagefolder | hub:NAME"
    )
    data_dir: str = key("", "folder holding the data (default: $FEDCOMPRESS_DATA_DIR or ../shared/data)")
    partitioning: str = key("dirichlet", "how data is split over clients", choices=PARTITIONINGS)
    num_partitions: int = key(
        10,
        "clients (partitions = simulated SuperNodes)",
        flag="--num-clients",
        check=AT_LEAST_1,
    )
    dirichlet_alpha: float = key(
        0.5,
        "Dirichlet concentration over labels",
        flag="--alpha",
        check=POSITIVE,
    )
    shards_per_client: int = key(2, "classes per client for 'shards'", check=AT_LEAST_1)
    val_fraction: float = key(
        0.1,
        "share of each client's data held out for its evaluation",
        check=UNIT_INTERVAL,
    )
    model: str = key("auto", "model family (auto picks by dataset)", choices=MODEL_CHOICES)
    width: float = key(1.0, "model width multiplier", check=Check(lambda v: 0 < v <= 4, "a number in (0, 4]"))
    strategy: str = key("fedavg", "inner Flower strategy", choices=_strategies)  # type: ignore[arg-type]
    proximal_mu: float = key(0.01, "FedProx mu", check=NON_NEGATIVE)
    server_learning_rate: float = key(
        0.1,
        "server learning rate (FedAdam/FedYogi/FedAdagrad)",
        flag="--server-lr",
        check=POSITIVE,
    )
    server_momentum: float = key(0.9, "server momentum (FedAvgM)", check=UNIT_INTERVAL)
    eval_every: int = key(
        1,
        "central evaluation every N rounds (0 = last round only)",
        check=Check(lambda v: v >= 0, "an integer >= 0 (0 = only the last round)"),
    )
    seed: int = key(0, "seed for partitioning, sampling, initialisation and shuffling")
    run_dir: str = key("", "where to write metrics, ledger and summary (default ./runs/...)")
    uplink: str = key(DEFAULT_UPLINK, "uplink codec pipeline ('identity' = plain fp32)")
    downlink: str = key(DEFAULT_DOWNLINK, "downlink codec pipeline ('identity' = plain fp32)")
    compression: str = key(
        CUSTOM,
        "named preset setting uplink and downlink together (see the README's preset table); "
        "'custom' uses --uplink / --downlink as given",
        choices=_presets,  # type: ignore[arg-type]
    )
    downlink_shared_init: bool = key(
        True, "first compressed downlink is a delta from the seeded initial model"
    )
    downlink_ring: int = key(
        16,
        "rounds a model a client holds stays a downlink delta base (older: delta from the initial model)",
        check=AT_LEAST_1,
    )
    server_state_mb: float = key(
        0.0,
        "server budget for the models clients hold, in MB (0 = no limit; too small fails at start-up)",
        check=NON_NEGATIVE,
    )
    discovery: str = key(
        "query",
        "how the server learns each node's partition: 'query' asks every node once (reproducible sampling); "
        "'node-order' skips the round trip (fast start with 10,000 simulated nodes; sampling differs per run)",
        choices=("query", "node-order"),
    )
    held_store: str = key(
        "auto",
        "where a client keeps the model it holds: 'state' (context.state), a folder shared by the nodes, or "
        "'auto' (a temp folder shared by all simulated nodes, deduplicated by digest; context.state otherwise)",
    )
    target_accuracy: float = key(
        0.0,
        "stop the round central accuracy first reaches this (0 = run every round)",
        check=Check(lambda v: 0 <= v <= 1, "a number in [0, 1] (0 = run every round)"),
    )
    tiers: str = key("", "device tiers, 'name=width[/storage] ...' (empty: one model)")
    tier_mix: str = key("", "share of clients per tier, 'name=fraction ...'")
    tier_training: str = key(
        "nested-distill", "how tiers learn (see fedcompress.tiers)", choices=TIER_TRAINING
    )
    distill_epochs: int = key(
        1, "server distillation epochs per round", check=Check(lambda v: v >= 0, "an integer >= 0")
    )
    distill_lr: float = key(0.0001, "server distillation learning rate", check=POSITIVE)
    distill_tau: float = key(2.0, "distillation temperature", check=POSITIVE)
    distill_proxy_fraction: float = key(
        0.05,
        "share of train images withheld as the server's unlabeled proxy set",
        check=Check(lambda v: 0 < v < 1, "a number in (0, 1)"),
    )
    distill_feature_weight: float = key(
        0.0, "weight of the feature (hint) distillation loss", check=NON_NEGATIVE
    )
    distill_relation_weight: float = key(
        0.0, "weight of the relation (RKD) distillation loss", check=NON_NEGATIVE
    )
    distill_teachers: str = key("all", "teachers of each tier", choices=("all", "wider"))
    device: str = key("auto", "where clients and server compute: " + DEVICE_HELP, check=DEVICE)
    client_num_gpus: float = key(
        0.0,
        "GPU share Ray reserves per virtual client (0.25: four clients share a GPU; 0: no reservation)",
        check=NON_NEGATIVE,
    )
    checkpoint: bool = key(
        True, "write a checkpoint after every round (continue a killed run with --resume RUN_DIR)"
    )
    resume_run: bool = key(False, "continue from the run directory's checkpoint (what --resume RUN_DIR sets)")
    fail_prob: float = key(
        0.0,
        "fault injection: chance a sampled client fails in a round (seeded)",
        check=Check(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    straggler_prob: float = key(
        0.0,
        "fault injection: chance a sampled client is slow in a round (seeded)",
        check=Check(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    straggler_delay: float = key(
        0.0, "fault injection: seconds a slow client waits before replying", check=NON_NEGATIVE
    )
    round_timeout: float = key(
        0.0, "seconds the server waits for a round's replies (0 = Flower's 3600)", check=NON_NEGATIVE
    )
    min_reply_fraction: float = key(
        0.0,
        "fewer accepted replies than this share of the sampled clients: the round keeps the previous model",
        check=Check(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    attack: str = key("none", "what attacking clients send instead of their update", choices=ATTACKS)
    attack_fraction: float = key(
        0.0,
        "share of clients (partitions, seeded) that attack",
        check=Check(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    attack_scale: float = key(
        10.0,
        "attack strength: the factor of 'scale' and 'sign-flip', the std of 'random' relative to the update",
        check=POSITIVE,
    )
    norm_bound: float = key(
        0.0, "server: reject updates whose L2 norm exceeds this (0 = off)", check=NON_NEGATIVE
    )
    num_malicious: int = key(
        0,
        "attackers the robust strategies (krum, multikrum, bulyan) assume per round",
        check=Check(lambda v: v >= 0, "an integer >= 0"),
    )
    trim_beta: float = key(
        0.2,
        "share trimmed at each end by fedtrimmedavg",
        check=Check(lambda v: 0 <= v < 0.5, "a number in [0, 0.5)"),
    )
    tier_uplink: str = key(
        "", "per-tier uplink pipelines, 'tier: pipeline; ...' (tiers not named use uplink)"
    )
    tier_downlink: str = key(
        "", "per-tier downlink pipelines, 'tier: pipeline; ...' (tiers not named use downlink)"
    )
    tier_refresh_every: int = key(5, "deliver mode: rounds between server-made tier models", check=AT_LEAST_1)
    tier_nested_weight: float = key(
        1.0,
        "nested mode: weight of each narrower width's loss on a client (1: losses summed; 0: HeteroFL)",
        check=NON_NEGATIVE,
    )

    def __post_init__(self) -> None:
        """A preset is a spelling: it becomes its pipelines here, so a digest or a hash sees only those."""
        if self.compression == CUSTOM:
            return
        from fedcompress.codecs.presets import NAMES, preset

        if self.compression not in NAMES:
            return  # validate() names the bad value and the choices
        chosen = preset(self.compression)
        assert chosen is not None
        for name in PIPELINE_KEYS:
            value, wanted = getattr(self, name), getattr(chosen, name)
            if value not in (wanted, _DEFAULT_PIPELINES[name]):  # set on purpose, and not to the preset's
                raise _preset_conflict(self.compression, name, value)
            object.__setattr__(self, name, wanted)
        object.__setattr__(self, "compression", CUSTOM)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls)]

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any], *, strict: bool = False) -> RunConfig:
        """Build from Flower's run_config (kebab-case keys), checking names, types and ranges of our keys.

        Keys that are not ours are ignored (a Flower server may send its own, e.g. `fraction-evaluate`);
        with `strict=True` they are an error (what a user typed on our command line).
        """
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name_, value in run_config.items():
            name = str(name_).replace("-", "_")
            if name not in types:
                if strict:
                    raise ConfigError(f"unknown config key {name_!r}; valid keys: {', '.join(cls.keys())}")
                continue
            values[name] = _coerce(str(name_), value, types[name])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        if self.clients_per_round > self.num_partitions:
            raise ConfigError(
                f"config key 'clients-per-round' = {self.clients_per_round}: expected <= num-partitions "
                f"({self.num_partitions})"
            )
        for name in ("uplink", "downlink"):
            spec = getattr(self, name)
            if spec != "identity":
                from fedcompress.codecs import Pipeline

                try:
                    Pipeline.parse(spec)
                except ValueError as err:
                    raise ConfigError(f"config key {name!r} = {spec!r}: {err}") from None
        if self.tiers or self.tier_mix:
            from fedcompress.devices.config import parse_tier_config

            tiers, _ = parse_tier_config(self.tiers, self.tier_mix)  # raises ConfigError naming the bad entry
            from fedcompress.tiers.codecs import parse_tier_codecs

            parse_tier_codecs(self.tier_uplink, "tier-uplink", tiers)
            parse_tier_codecs(self.tier_downlink, "tier-downlink", tiers)
        elif self.tier_uplink or self.tier_downlink:
            raise ConfigError(
                "config keys 'tier-uplink' / 'tier-downlink' need 'tiers' (this run has one model)"
            )

    def as_run_config(self) -> dict[str, Any]:
        """The resolved config (kebab-case keys). `compression` is left out: once resolved it is always
        'custom' and the pipelines say what runs, so run dirs, checkpoints, digests and study cell ids stay what
        they were before presets existed."""
        out = {k.replace("_", "-"): v for k, v in asdict(self).items()}
        del out["compression"]
        return out

    def digest(self) -> str:
        """A short hash of the resolved config (run-dir excluded), to tell runs apart and skip finished ones."""
        return _digest(self)


OMIT_AT_DEFAULT = {"tier-nested-weight": 1.0}
# Keys that change nothing in a run without tiers, pinned there to the defaults that such runs were made with
# before the defaults changed (2026-12-02: tier-training nested -> nested-distill, distill-lr 1e-3 -> 1e-4), so a
# run without tiers keeps its digest and its study cell id.
UNTIERED_AS_MADE = {"tier-training": "nested", "distill-lr": 0.001}


def untiered_as_made(body: dict[str, Any]) -> dict[str, Any]:
    """`body` (a resolved run config) with the tier-only keys pinned when the run has no tiers."""
    return {**body, **UNTIERED_AS_MADE} if not body.get("tiers") else body


@lru_cache(maxsize=32)
def _digest(cfg: RunConfig) -> str:
    """Cached: clients key their data by it on every message."""
    body = untiered_as_made(
        {k: v for k, v in cfg.as_run_config().items() if k not in ("run-dir", "resume-run")}
    )
    for k, default in OMIT_AT_DEFAULT.items():  # keys added later: runs made before them keep their digest
        if body.get(k) == default:
            body.pop(k)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def declared() -> list[Field]:
    """The declaration: one dataclass field per run-config key, with its metadata."""
    return list(fields(RunConfig))


def defaults() -> dict[str, Any]:
    """The default run config as Flower reads it (kebab-case keys)."""
    return {f.name.replace("_", "-"): f.default for f in fields(RunConfig) if f.default is not MISSING}


def choices_of(f: Field) -> tuple[Any, ...] | None:
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _check_field(f: Field, value: Any) -> None:
    key_name = f.name.replace("_", "-")
    choices = choices_of(f)
    if choices is not None and value not in choices:
        raise ConfigError(f"config key {key_name!r} = {value!r}: expected one of {choices}")
    check: Check | None = f.metadata.get("check")
    if check is not None and not check.ok(value):
        raise ConfigError(f"config key {key_name!r} = {value!r}: expected {check.expect}")


def _coerce(key_name: str, value: Any, typ: Any) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key {key_name!r} = {value!r}: expected {typ.__name__}, got {type(value).__name__}"
        )
    return value


def parse_overrides(text: str) -> dict[str, Any]:
    """Parse `k=v k2="a b"` overrides like `flwr run --run-config` (TOML values; quoted values may hold spaces,
    as codec specs do)."""
    out: dict[str, Any] = {}
    for item in shlex.split(text):
        if "=" not in item:
            raise ConfigError(f"run-config override {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = tomllib.loads(f"x = {v}")["x"]
        except tomllib.TOMLDecodeError:
            out[k] = v
    return out


def check_keys(overrides: dict[str, Any]) -> None:
    """Overrides a user typed must all be ours, and must not name a preset and a pipeline at once."""
    unknown = sorted(set(overrides) - set(RunConfig.keys()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(RunConfig.keys())}")
    check_preset(overrides)


def check_preset(overrides: dict[str, Any]) -> None:
    """A preset and an explicit `uplink` / `downlink` in the same overrides: which one was meant is unknowable.

    Only overrides can tell "set on purpose" from "left at the default"; a resolved config is checked by
    RunConfig itself (a pipeline that is neither the default nor the preset's).
    """
    name = overrides.get("compression", CUSTOM)
    if name == CUSTOM:
        return
    for key_name in PIPELINE_KEYS:
        if key_name in overrides:
            raise _preset_conflict(str(name), key_name, overrides[key_name])


def _preset_conflict(name: str, key_name: str, value: Any) -> ConfigError:
    return ConfigError(
        f"config key 'compression' = {name!r} sets both pipelines, and config key {key_name!r} = {value!r} "
        f"sets the {key_name} too: give one of them (compression = 'custom' uses {key_name!r} as given)"
    )
