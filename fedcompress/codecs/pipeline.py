"""Pipelines: stages composed in a fixed order, encoded to one self-describing payload.

Order: ``[sparsifier] > [ef] > [quantizer] > [coder]`` (``ef`` may be written anywhere: it is a stateful
wrapper around the sparsifier and quantizer, :mod:`.feedback`). The header carries the canonical spec, so
``decode`` needs nothing but the payload. Sections, always three: kept indices (empty when dense), quantizer side information, coded symbols.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import wire
from .contract import (
    Compressed,
    Encoded,
    EncodeResult,
    Lossy,
    Properties,
    Quantizer,
    Sparsifier,
    Stage,
    Stateful,
)
from .entropy import Entropy, Raw, Zstd
from .errors import PayloadError
from .feedback import ErrorFeedback, Stateless
from .layout import Layout, is_torch
from .quantize import BF16, FP16, QSGD, Identity, Sign, Ternary, Uniform
from .sparsify import RandK, Threshold, TopK
from .spec import BySpec, StageCall, parse_spec
from .vq import PQ, KMeans

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (
        TopK,
        RandK,
        Threshold,
        ErrorFeedback,
        Identity,
        FP16,
        BF16,
        Uniform,
        QSGD,
        Ternary,
        Sign,
        KMeans,
        PQ,
    )
    + (Raw, Zstd, Entropy)
}
_ORDER = {"sparsify": 0, "quantize": 1, "code": 2}
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30
N_SECTIONS = 3
_MAX_SEED = (1 << 64) - 1


def _uses_torch(tensors: Mapping[str, Any], state: Mapping[str, Any] | None) -> bool:
    return any(is_torch(v) for v in tensors.values()) or any(is_torch(v) for v in (state or {}).values())


def make_stage(call: StageCall) -> Stage:
    """Instantiate one stage; unknown names list the known ones."""
    cls = STAGES.get(call.name)
    if cls is None:
        raise ValueError(f"unknown stage {call.name!r} (known: {', '.join(sorted(STAGES))})")
    return cls.from_call(call)


class SparseQuantize(Lossy):
    """The lossy part of a pipeline: an optional sparsifier, then a quantizer."""

    def __init__(self, sparsifier: Sparsifier | None, quantizer: Quantizer) -> None:
        self.sparsifier = sparsifier
        self.quantizer = quantizer

    def compress(self, flat: np.ndarray, layout: Layout, seed: int) -> Compressed:
        sp, q = self.sparsifier, self.quantizer
        nonzero = bool(sp and sp.nonzero)
        n = layout.total
        if sp is not None:
            idx = sp.select(flat, layout, seed)
            values = flat[idx]
            factor = sp.value_scale(n, idx.size)
            if factor != 1.0:
                values *= np.float32(factor)
            index_sec = sp.encode_index(idx, layout, seed)
        else:
            idx, values, index_sec = None, flat, Encoded(b"", 0)
        starts = layout.group_starts(q.grouping, idx, values.size)
        symbols, side = q.encode(values, starts, np.random.default_rng([seed, 0x51]), nonzero)
        return Compressed(idx, values, starts, symbols, side, index_sec, nonzero)

    def reconstruct(self, c: Compressed) -> np.ndarray:
        return self.quantizer.decode(c.symbols, c.side, c.starts, c.nonzero)[: c.values.size]


class Pipeline(BySpec):
    """A composed codec. Build with :meth:`parse` or :meth:`from_toml`; equal pipelines have equal specs."""

    family = "pipeline"

    def __init__(
        self,
        sparsifier: Sparsifier | None = None,
        feedback: Stateful | None = None,
        quantizer: Quantizer | None = None,
        coder: Stage | None = None,
    ) -> None:
        self.sparsifier = sparsifier
        self.feedback = feedback
        self.quantizer = quantizer or Identity()
        self.coder = coder or Raw()
        self._lossy = SparseQuantize(sparsifier, self.quantizer)
        self._stateful: Stateful = feedback or Stateless()

    # ------------------------------------------------------------ construction

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        """From a spec string such as ``"topk(0.01) > ef > uniform(4, stochastic) > entropy"``."""
        return cls.from_stages([make_stage(call) for call in parse_spec(text)])

    @classmethod
    def from_toml(cls, table: Mapping[str, Any]) -> Pipeline:
        """From a TOML table: ``{spec = "..."}`` or ``{stages = ["topk(0.01)", {name = "uniform", bits =
        4}]}``."""
        if not isinstance(table, Mapping):
            raise ValueError(f"pipeline table must be a mapping, got {type(table).__name__}")
        unknown = set(table) - {"spec", "stages"}
        if unknown or len(table) != 1:
            raise ValueError(f"pipeline table needs exactly one of 'spec' or 'stages' (got {sorted(table)})")
        if "spec" in table:
            return cls.parse(table["spec"])
        stages = table["stages"]
        if isinstance(stages, str) or not isinstance(stages, list | tuple):
            raise ValueError("'stages' must be a list of stage strings or tables")
        built = []
        for item in stages:
            if isinstance(item, str):
                built.extend(make_stage(c) for c in parse_spec(item))
            elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
                kwargs = {str(k).lower(): v for k, v in item.items() if k != "name"}
                built.append(make_stage(StageCall(item["name"].lower(), (), kwargs)))
            else:
                raise ValueError(f"stage entry {item!r}: expected a string or a table with a 'name'")
        return cls.from_stages(built)

    @classmethod
    def from_stages(cls, stages: list[Stage]) -> Pipeline:
        """Check kinds and order, then assemble."""
        slots: dict[str, Stage] = {}
        last = -1
        for stage in stages:
            if stage.kind in slots:
                raise ValueError(
                    f"pipeline has two {stage.kind} stages: {slots[stage.kind].spec} and {stage.spec}"
                )
            slots[stage.kind] = stage
            if stage.kind in _ORDER:
                if _ORDER[stage.kind] < last:
                    raise ValueError(
                        f"stage {stage.spec!r} out of order; use [sparsifier] > [ef] > [quantizer] > [coder]"
                    )
                last = _ORDER[stage.kind]
        return cls(slots.get("sparsify"), slots.get("feedback"), slots.get("quantize"), slots.get("code"))

    # ------------------------------------------------------------ description

    @property
    def stages(self) -> list[Stage]:
        """Non-default stages in canonical order."""
        out: list[Stage] = [s for s in (self.sparsifier, self.feedback) if s is not None]
        if not isinstance(self.quantizer, Identity):
            out.append(self.quantizer)
        if not isinstance(self.coder, Raw):
            out.append(self.coder)
        return out

    @property
    def spec(self) -> str:
        """Canonical spec string; ``Pipeline.parse(p.spec) == p``."""
        return " > ".join(s.spec for s in self.stages) or "identity"

    @property
    def properties(self) -> Properties:
        props = self.quantizer.properties & self.coder.properties
        for stage in (self.sparsifier, self.feedback):
            if stage is not None:
                props = props & stage.properties
        return props

    @property
    def is_identity(self) -> bool:
        """True when the payload is raw fp32 (no sparsifier, quantizer, coder or error feedback)."""
        return not self.stages

    # ------------------------------------------------------------ encode

    def encode(
        self,
        tensors: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
    ) -> EncodeResult:
        """Compress ``tensors`` (+ the error-feedback ``state`` when the pipeline has ``ef``).

        Returns the payload, the new state (``None`` without a stateful stage) and the byte accounting.
        """
        if not isinstance(seed, int | np.integer) or not 0 <= int(seed) <= _MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
        layout = Layout.of(tensors)
        if _uses_torch(tensors, state):  # torch tensors, any device: same bytes, work on their device
            from .torchpath import compress

            st, new_state = compress(self, tensors, layout, state, int(seed))
        else:
            st, new_state = self._stateful.encode(self._lossy, tensors, layout, state, int(seed))
        value_sec = self.coder.encode(st.symbols, self.quantizer.symbol_bits(st.nonzero))
        index_sec, side = st.index, st.side
        lengths = (len(index_sec.data), len(side), len(value_sec.data))
        payload, _ = wire.pack(
            wire.Header(self.spec, int(seed), layout.infos, lengths), [index_sec.data, side, value_sec.data]
        )
        coded = index_sec.coded + value_sec.coded
        return EncodeResult(
            payload=payload,
            state=new_state,
            raw_bytes=4 * layout.total,
            metadata_bytes=len(payload) - coded,
            value_bytes=value_sec.coded,
            index_bytes=index_sec.coded,
        )

    def symbols(
        self, tensors: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray] | None = None, seed: int = 0
    ) -> tuple[np.ndarray, int]:
        """The integer symbols the coder would see and their bit width (for diagnostics and benchmarks)."""
        if _uses_torch(tensors, state):
            from fedcompress.accel import to_numpy

            tensors, state = to_numpy(tensors), None if state is None else to_numpy(state)
        st, _ = self._stateful.encode(self._lossy, tensors, Layout.of(tensors), state, int(seed))
        return st.symbols, self.quantizer.symbol_bits(st.nonzero)

    # ------------------------------------------------------------ decode

    def _decode_sections(
        self, layout: Layout, seed: int, sections: list[memoryview]
    ) -> dict[str, np.ndarray]:
        n = layout.total
        sp, q = self.sparsifier, self.quantizer
        nonzero = bool(sp and sp.nonzero)
        index_data, side, value_data = sections
        if sp is not None:
            idx = sp.decode_index(index_data, layout, seed)
        else:
            if len(index_data):
                raise PayloadError("dense pipeline with a non-empty index section")
            idx = None
        k = n if idx is None else idx.size
        starts = layout.group_starts(q.grouping, idx, k)
        symbols = self.coder.decode(value_data, q.symbol_count(k), q.symbol_bits(nonzero))
        values = q.decode(symbols, side, starts, nonzero)
        if values.size < k:
            raise PayloadError(f"decoded {values.size} values, expected {k}")
        values = values[:k]
        if not np.isfinite(values).all():
            raise PayloadError("decoded values contain NaN or Inf")
        if idx is None:
            flat = values
        else:
            flat = np.zeros(n, np.float32)
            flat[idx] = values
        return layout.split(flat)


def decode(
    payload: bytes | bytearray | memoryview,
    expected: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
    max_output_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode any payload to float32 tensors, validating everything before allocating.

    ``expected`` maps name -> (shape, dtype) of the model: with it, the work and memory spent on a payload
    are bounded by the model, not by what the payload declares. ``max_output_bytes`` bounds the decoded
    float32 size (default 4 GiB). Raises :class:`PayloadError` (a short reason) on any malformed or hostile
    payload, and nothing else.
    """
    header, sections = wire.unpack(payload, expected)
    try:
        pipe = Pipeline.parse(header.spec)
    except ValueError as exc:
        raise PayloadError(f"payload names an unknown or invalid codec: {str(exc)[:160]}") from None
    if expected is not None and len(header.tensors) != len(expected):  # wire.unpack checked each entry
        raise PayloadError("tensor names disagree with the model")
    bound = DEFAULT_MAX_OUTPUT_BYTES if max_output_bytes is None else int(max_output_bytes)
    total = sum(t.size for t in header.tensors)
    if 4 * total > bound:
        raise PayloadError(f"payload declares {4 * total} bytes of output, above the bound of {bound}")
    if len(sections) != N_SECTIONS:
        raise PayloadError(f"payload has {len(sections)} sections, expected {N_SECTIONS}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # hostile scales may overflow: checked after
            return pipe._decode_sections(Layout(header.tensors), header.seed, sections)
    except PayloadError:
        raise
    except (ValueError, IndexError, OverflowError, struct.error) as exc:
        raise PayloadError(f"malformed payload: {type(exc).__name__}: {str(exc)[:160]}") from exc
