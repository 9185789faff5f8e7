"""The server's delivery pipeline: global model -> a model made for one device, measured as it will be stored.

1. importance-based structured pruning to the asked channels (a genuinely smaller dense model of the same
   family; each layer keeps its most important output channels and the next layer's inputs are sliced to
   match, so the student starts close to the teacher);
2. distillation from the global model on the server's unlabeled proxy set (response KD; hint and RKD
   losses optional);
3. storage: fp32, int8 post-training quantization, int8 QAT (fake-quant distillation) or k-means sharing;
4. the artefact is written to disk, its size read back with `os.path.getsize`, and the model the device
   would load from that file is timed at batch 1 on one CPU thread.
"""

from __future__ import annotations

import copy
import io
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedcompress.distillation import distill
from fedcompress.errors import ConfigError
from fedcompress.export import measure_latency_ms
from fedcompress.models import MODELS, build_model
from fedcompress.pruning import channel_importance, layer_chain, prune_to_plan
from fedcompress.quantization import (
    SharedModel,
    convert_qat,
    int8_bytes,
    kmeans_share,
    load_int8,
    prepare_qat,
    quantize_int8,
)
from fedcompress.quantization._compat import quiet

STORAGE_HELP = (
    "'fp32', 'int8' (post-training), 'qat8' (quantization-aware distillation) or 'kmeans1'..'kmeans8'"
)
IMPORTANCES = ("taylor", "l1")
_KMEANS = re.compile(r"^kmeans([1-8])$")


def storage_bits(storage: str) -> int:
    """Bits per stored weight: fp32 32, int8/qat8 8, kmeansB B; anything else is a ConfigError."""
    if storage == "fp32":
        return 32
    if storage in ("int8", "qat8"):
        return 8
    m = _KMEANS.match(storage) if isinstance(storage, str) else None
    if m:
        return int(m.group(1))
    raise ConfigError(f"storage must be {STORAGE_HELP}, got {storage!r}")


@dataclass(frozen=True)
class Recipe:
    """Everything needed to rebuild a device model from the global model (written beside the artefact)."""

    family: str
    num_classes: int
    channels: dict[str, int]  # kept output channels per prunable layer
    per_layer_ratios: dict[str, float]  # fraction of each layer's channels removed
    width: float  # mean kept fraction over the prunable layers (1.0 = the teacher's shape)
    storage: str
    epochs: int
    lr: float
    tau: float
    feature_weight: float = 0.0
    relation_weight: float = 0.0
    importance: str = "taylor"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bits": storage_bits(self.storage)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DeviceModel:
    """A device model and what it really costs."""

    model: nn.Module  # what the device runs, loaded back from the artefact
    artefact: bytes  # what the device downloads and stores
    nbytes: int  # os.path.getsize of the written artefact
    latency_ms: float  # median forward time, batch 1, one thread, on the loaded artefact
    accuracy: float | None  # on `val`, if given
    recipe: Recipe
    seconds: float  # wall time of make_device_model
    student: nn.Module = field(repr=False)  # the float student before storage

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artefact under a temporary name and rename it, so a crash never leaves half a file."""
        return atomic_write(Path(path), self.artefact)


def atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- structure


def teacher_channels(teacher: nn.Module) -> dict[str, int]:
    """Output channels of each prunable layer of the teacher (conv1.., fc1)."""
    return {n: int(getattr(teacher, n).weight.shape[0]) for n in layer_chain(teacher).layers}


def check_family(teacher: nn.Module, family: str) -> None:
    if family not in MODELS:
        raise ConfigError(f"unknown model family {family!r}; expected one of {sorted(MODELS)}")
    if not isinstance(teacher, MODELS[family]):
        raise ConfigError(
            f"teacher is a {type(teacher).__name__}, not the {family!r} family ({MODELS[family].__name__})"
        )
    layer_chain(teacher)  # only the conv -> fc CNN families can be structurally pruned


def width_channels(teacher: nn.Module, family: str, width: float) -> dict[str, int]:
    """The channels of `family` at `width` (the shape a tier of that width has), checked against the teacher."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ConfigError(f"width must be a number in (0, 1], got {width!r}")
    num_classes = int(teacher.fc2.out_features)
    target = teacher_channels(build_model(family, num_classes, float(width)))
    have = teacher_channels(teacher)
    too_wide = {n: (c, have[n]) for n, c in target.items() if c > have[n]}
    if too_wide:
        raise ConfigError(f"width {width} needs more channels than the teacher has (wanted, has): {too_wide}")
    return target


def check_channels(teacher: nn.Module, channels: Mapping[str, int]) -> dict[str, int]:
    have = teacher_channels(teacher)
    if set(channels) != set(have):
        raise ConfigError(f"channels must name exactly the layers {list(have)}, got {sorted(channels)}")
    out = {}
    for n, c in channels.items():
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= have[n]:
            raise ConfigError(f"channels[{n!r}] must be an integer in [1, {have[n]}], got {c!r}")
        out[n] = c
    return {n: out[n] for n in have}


def channel_scores(
    teacher: nn.Module, proxy_x: torch.Tensor, importance: str = "taylor"
) -> dict[str, torch.Tensor]:
    """Importance of every output channel of every prunable layer.

    "taylor": first-order Taylor estimate of the loss change when the channel is removed (Molchanov et al.
    2017), |sum over positions of activation * gradient| averaged over the proxy set, with the teacher's own
    predictions as labels (the proxy set is unlabeled); it ranks channels by what they do on data, which
    weight norms cannot see. "l1": the L1 norm of each filter's weights (no data).
    """
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance must be one of {list(IMPORTANCES)}, got {importance!r}")
    layers = layer_chain(teacher).layers
    if importance == "l1":
        return {n: channel_importance(getattr(teacher, n).weight, "l1") for n in layers}
    model = copy.deepcopy(teacher).eval()
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out))
        for n in layers
    ]
    scores = {n: torch.zeros(getattr(model, n).weight.shape[0]) for n in layers}
    try:
        for xb in torch.split(proxy_x, 256):
            logits = model(xb)
            loss = F.cross_entropy(logits, logits.detach().argmax(1), reduction="sum")
            grads = torch.autograd.grad(loss, [acts[n] for n in layers])
            for n, g in zip(layers, grads, strict=True):
                contrib = acts[n].detach() * g
                per_example = contrib.flatten(2).sum(2) if contrib.dim() == 4 else contrib
                scores[n] += per_example.abs().sum(0)
    finally:
        for h in hooks:
            h.remove()
    return {n: s / len(proxy_x) for n, s in scores.items()}


def shrink(teacher: nn.Module, channels: Mapping[str, int], scores: Mapping[str, torch.Tensor]) -> nn.Module:
    """The teacher with only the `channels[layer]` highest-scoring output channels of each layer kept."""
    plan = {n: torch.argsort(scores[n], descending=True, stable=True)[:k] for n, k in channels.items()}
    return prune_to_plan(teacher, plan).eval()


# ---------------------------------------------------------------- storage


def _state_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def store(
    student: nn.Module,
    storage: str,
    proxy_x: torch.Tensor,
    *,
    teacher: nn.Module | None = None,
    qat_epochs: int = 1,
    lr: float = 1e-3,
    tau: float = 4.0,
    seed: int = 0,
) -> bytes:
    """The artefact bytes of `student` stored as `storage` (`student` is not modified)."""
    storage_bits(storage)
    model = copy.deepcopy(student).eval()
    if storage == "fp32":
        return _state_bytes(model.state_dict())
    if storage == "int8":
        return int8_bytes(quantize_int8(model, torch.split(proxy_x[:256], 128)))
    if storage == "qat8":
        if teacher is None:
            raise ConfigError("storage 'qat8' distills with fake quantization and needs the teacher")
        prepared = prepare_qat(model, proxy_x[:2])
        with quiet():
            distill(prepared, teacher, proxy_x, epochs=qat_epochs, lr=lr / 4, tau=tau, seed=seed + 1)
        return int8_bytes(convert_qat(prepared))
    return kmeans_share(model, storage_bits(storage)).to_bytes()


def template(recipe: Recipe, in_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A float model of the recipe's shape (weights meaningless): what a device builds before loading."""
    base = build_model(recipe.family, recipe.num_classes, 1.0)
    have = teacher_channels(base)
    if any(c > have[n] for n, c in recipe.channels.items()):
        base = build_model(recipe.family, recipe.num_classes, 4.0)
    return prune_to_plan(base, {n: torch.arange(c) for n, c in recipe.channels.items()}).eval()


def load_artefact(path: str | os.PathLike[str], recipe: Recipe, example: torch.Tensor) -> nn.Module:
    """Rebuild the runnable model from an artefact file and its recipe, as a device would."""
    data = Path(path).read_bytes()
    model = template(recipe)
    if recipe.storage in ("int8", "qat8"):
        return load_int8(model, data, example[:1]).eval()
    if recipe.storage == "fp32":
        model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    else:
        model.load_state_dict(SharedModel.from_bytes(data).state_dict())
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy, batched."""
    correct = 0
    with quiet():
        for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True):
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(len(y), 1)


def measure(
    data: bytes, recipe: Recipe, example: torch.Tensor, *, latency_runs: int = 50
) -> tuple[nn.Module, int, float]:
    """Write `data` to a temporary file, read its size, load it back as the device would, time it."""
    with tempfile.TemporaryDirectory(prefix="fedcompress-artefact-") as tmp:
        path = Path(tmp) / "model.bin"
        path.write_bytes(data)
        nbytes = os.path.getsize(path)
        model = load_artefact(path, recipe, example)
    return model, nbytes, measure_latency_ms(model, example[:1], runs=latency_runs, warmup=10)


# ---------------------------------------------------------------- the pipeline


def check_proxy(proxy_x: torch.Tensor, teacher: nn.Module, minimum: int = 32) -> torch.Tensor:
    """The proxy set must be a float batch the teacher accepts, with at least `minimum` examples."""
    if not isinstance(proxy_x, torch.Tensor) or not proxy_x.is_floating_point():
        raise ConfigError(f"proxy_x must be a float tensor of inputs, got {type(proxy_x).__name__}")
    if len(proxy_x) < minimum:
        raise ConfigError(f"proxy set has {len(proxy_x)} examples; at least {minimum} are needed to distill")
    try:
        with torch.no_grad():
            teacher.eval()(proxy_x[:2])
    except RuntimeError as err:
        raise ConfigError(
            f"proxy_x of shape {tuple(proxy_x.shape)} does not fit the teacher: {err}"
        ) from None
    return proxy_x


def make_device_model(
    teacher: nn.Module,
    *,
    family: str,
    width: float,
    proxy_x: torch.Tensor,
    storage: str = "int8",
    epochs: int = 5,
    lr: float = 2e-3,
    tau: float = 4.0,
    feature_weight: float = 0.0,
    relation_weight: float = 0.0,
    seed: int = 0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    channels: Mapping[str, int] | None = None,
    importance: str = "taylor",
    scores: Mapping[str, torch.Tensor] | None = None,
    latency_runs: int = 50,
) -> DeviceModel:
    """Prune, distill, store and measure a device model from `teacher` (which is left untouched).

    `width` picks the shape of `family` at that width; `channels` ({layer: kept channels}) overrides it with
    per-layer choices (as `choose_recipe` makes). `scores` lets a caller reuse `channel_scores` across calls.
    When nothing is pruned and no feature/relation loss is asked, distillation is skipped (the student is
    the teacher). `epochs` passes over `proxy_x` with Adam at `lr`; qat8 adds one fake-quant pass.
    """
    t0 = time.perf_counter()
    check_family(teacher, family)
    storage_bits(storage)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not lr > 0 or not tau > 0:
        raise ConfigError(f"lr and tau must be > 0, got lr={lr!r}, tau={tau!r}")
    check_proxy(proxy_x, teacher)
    full = teacher_channels(teacher)
    kept = (
        check_channels(teacher, channels) if channels is not None else width_channels(teacher, family, width)
    )
    teacher = teacher.eval()
    if scores is None:
        scores = channel_scores(teacher, proxy_x, importance)
    student = shrink(teacher, kept, scores)
    pruned = kept != full
    if epochs > 0 and (pruned or feature_weight > 0 or relation_weight > 0):
        distill(
            student, teacher, proxy_x, epochs=epochs, lr=lr, tau=tau,
            feature_weight=feature_weight, relation_weight=relation_weight, seed=seed,
        )  # fmt: skip
    recipe = Recipe(
        family=family,
        num_classes=int(teacher.fc2.out_features),
        channels=kept,
        per_layer_ratios={n: round(1 - kept[n] / full[n], 4) for n in full},
        width=round(sum(kept[n] / full[n] for n in full) / len(full), 4),
        storage=storage,
        epochs=epochs if pruned or feature_weight > 0 or relation_weight > 0 else 0,
        lr=lr,
        tau=tau,
        feature_weight=feature_weight,
        relation_weight=relation_weight,
        importance=importance,
        seed=seed,
    )
    data = store(student, storage, proxy_x, teacher=teacher, lr=lr, tau=tau, seed=seed)
    model, nbytes, latency = measure(data, recipe, proxy_x, latency_runs=latency_runs)
    acc = accuracy(model, *val) if val is not None else None
    return DeviceModel(model, data, nbytes, latency, acc, recipe, time.perf_counter() - t0, student)
