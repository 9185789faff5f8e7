"""What every stage promises: its kind, its spec text, its declared properties, and its encode/decode pair.

Four kinds compose a pipeline, in this order: an optional *sparsifier* (which values travel), an optional
stateful wrapper (error feedback) around the sparsifier and quantizer, one *quantizer* (how each value becomes an integer symbol; ``identity`` keeps fp32 bits)
and one
*coder* (how symbols become bytes). Keeping the kinds apart lets any sparsifier pair with any quantizer
and coder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .layout import Grouping, Layout
from .spec import Arg, BySpec, StageCall, bind_call, bind_values, format_args
from .spec import usage as usage_line


@dataclass(frozen=True)
class Properties:
    """Declared behaviour, combined over a pipeline by ``and`` (``error_feedback``/``sparse`` by ``or``).

    lossless: decode(encode(x)) == x bit for bit.
    unbiased: E[decode(encode(x))] == x over seeds (x + residual with error feedback).
    deterministic: the payload does not depend on the seed.
    """

    lossless: bool
    unbiased: bool
    deterministic: bool
    error_feedback: bool = False
    sparse: bool = False

    def __and__(self, other: Properties) -> Properties:
        return Properties(
            self.lossless and other.lossless,
            self.unbiased and other.unbiased,
            self.deterministic and other.deterministic,
            self.error_feedback or other.error_feedback,
            self.sparse or other.sparse,
        )


LOSSLESS = Properties(lossless=True, unbiased=True, deterministic=True)


@dataclass(frozen=True)
class EncodeResult:
    """An encoded update and its byte accounting.

    ``metadata_bytes`` is everything in the payload that is not a coded value or coded index stream: the
    22-byte
    prefix, the header (spec, seed, names, shapes, section lengths), per-group scales/codebooks, and coder
    parameters (mode bytes, counts, ANS frequency tables, Rice parameters).
    ``value_bytes`` and ``index_bytes`` are the coded streams themselves (zstd frames, ANS words, packed
    bits, Rice
    bit streams), so ``metadata_bytes + value_bytes + index_bytes == num_bytes == len(payload)``.
    """

    payload: bytes
    state: dict[str, np.ndarray] | None
    raw_bytes: int
    metadata_bytes: int
    value_bytes: int
    index_bytes: int

    @property
    def num_bytes(self) -> int:
        return len(self.payload)

    @property
    def ratio(self) -> float:
        """fp32 bytes per payload byte."""
        return self.raw_bytes / max(1, self.num_bytes)


class Stage(BySpec, ABC):
    """Base of every stage: a registry name, a kind, declared arguments and declared properties.

    A stage declares its arguments once, ``args = (Float("frac", 0.0, 1.0, lo_open=True), Flag("per_layer"))``;
    construction (``TopK(0.01)`` or ``TopK(frac=0.01)``), parsing from a spec (:meth:`from_call`), validation,
    the canonical :attr:`spec`, :attr:`usage`, equality, hashing and ``repr`` all follow from it. Each value
    becomes an attribute of the same name. Checks across arguments go in :meth:`validate`.
    """

    family = "stage"
    name: ClassVar[str]
    kind: ClassVar[str]
    args: ClassVar[tuple[Arg, ...]] = ()
    usage: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ or "args" in cls.__dict__:
            cls.usage = usage_line(cls.name, cls.args) if hasattr(cls, "name") else ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        for key, value in bind_values(self.name, self.args, args, kwargs, self.fail).items():
            setattr(self, key, value)
        self.validate()

    @classmethod
    def fail(cls, message: str) -> ValueError:
        """An error that names the stage and its usage line."""
        return ValueError(f"{cls.name}: {message}; usage: {cls.usage}")

    def validate(self) -> None:
        """Checks across arguments (raise ``self.fail(...)``); each argument is already in range."""

    @classmethod
    def from_call(cls, call: StageCall) -> Stage:
        """Build from parsed spec arguments; errors name the stage, the argument and its allowed values."""
        return cls(**bind_call(cls.name, cls.args, call, cls.fail))

    @property
    def spec(self) -> str:
        """Canonical text; ``parse(spec)`` rebuilds an equal stage."""
        return format_args(self.name, self.args, {a.name: getattr(self, a.name) for a in self.args})

    @property
    @abstractmethod
    def properties(self) -> Properties: ...


@dataclass
class Encoded:
    """A section's bytes and how many of them are a coded stream (the rest is metadata)."""

    data: bytes
    coded: int


class Sparsifier(Stage):
    """Chooses which flat positions travel (sorted unique int64 indices) and codes those indices."""

    kind = "sparsify"
    #: kept values are bounded away from zero (top-k, threshold): quantizers can skip the zero level.
    nonzero: ClassVar[bool] = False

    @abstractmethod
    def select(self, flat: np.ndarray, layout: Layout, seed: int) -> np.ndarray: ...

    def value_scale(self, n: int, k: int) -> float:
        """Factor applied to kept values (``n/k`` makes random-k unbiased)."""
        return 1.0

    @abstractmethod
    def encode_index(self, idx: np.ndarray, layout: Layout, seed: int) -> Encoded: ...

    @abstractmethod
    def decode_index(self, data: memoryview, layout: Layout, seed: int) -> np.ndarray: ...


class Quantizer(Stage):
    """Maps float32 values to integer symbols plus side information (scales, codebooks)."""

    kind = "quantize"
    grouping: Grouping = "tensor"

    @abstractmethod
    def symbol_bits(self, nonzero: bool) -> int: ...

    def symbol_count(self, n: int) -> int:
        """Symbols coded for ``n`` values (fewer for vector quantizers)."""
        return n

    @abstractmethod
    def encode(
        self, values: np.ndarray, starts: np.ndarray, rng: np.random.Generator, nonzero: bool
    ) -> tuple[np.ndarray, bytes]:
        """Symbols (unsigned, < 2**bits) and side information."""

    @abstractmethod
    def decode(
        self, symbols: np.ndarray, side: memoryview | bytes, starts: np.ndarray, nonzero: bool
    ) -> np.ndarray:
        """float32 values; raises PayloadError on malformed side information."""


@dataclass
class Compressed:
    """What the lossy part made of one flat vector: the kept positions (``None``: dense), the kept values,
    their group starts, the integer symbols and side information, and the coded index section."""

    idx: np.ndarray | None
    values: np.ndarray
    starts: np.ndarray
    symbols: np.ndarray
    side: bytes
    index: Encoded
    nonzero: bool


class Lossy(ABC):
    """The lossy part of a pipeline (sparsifier and quantizer): a flat float32 vector to symbols, and back.

    ``compress`` may return views of ``flat`` (``identity`` keeps its bits), so whoever changes ``flat``
    afterwards must check for shared memory first.
    """

    @abstractmethod
    def compress(self, flat: np.ndarray, layout: Layout, seed: int) -> Compressed: ...

    @abstractmethod
    def reconstruct(self, c: Compressed) -> np.ndarray:
        """The decoder's float32 values at the kept positions (all of them when dense)."""


State = dict[str, np.ndarray]


class Stateful(Stage):
    """A stateful wrapper around the lossy part: it takes the client's state in and returns the next state.

    Contract: ``encode`` turns ``tensors`` (and ``state``, names equal to the tensors' or ``None``) into one
    flat float32 vector, lets ``inner`` compress it, and returns what ``inner`` made with the new state (a
    dict shaped like ``tensors``). It never changes the payload's format: decoding needs nothing from it.
    """

    kind = "feedback"

    @abstractmethod
    def encode(
        self, inner: Lossy, tensors: Mapping[str, np.ndarray], layout: Layout, state: State | None, seed: int
    ) -> tuple[Compressed, State | None]: ...


class Coder(Stage):
    """Turns integer symbols into bytes and back, losslessly."""

    kind = "code"

    @property
    def properties(self) -> Properties:
        return LOSSLESS

    @abstractmethod
    def encode(self, symbols: np.ndarray, bits: int) -> Encoded: ...

    @abstractmethod
    def decode(self, data: memoryview, n: int, bits: int) -> np.ndarray: ...
