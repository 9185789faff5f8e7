"""Spec strings: ``"topk(0.01) > ef > uniform(4, stochastic) > entropy"`` parsed into stage calls.

Parsing is separate from the stages. A stage declares its arguments once (:class:`Arg`: ``Int``, ``Float``,
``Flag``); from that declaration come parsing a :class:`StageCall`, validation, the canonical spec text and
the usage line, and every error names the stage, the argument and what it allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Value = int | float | str | bool

_STAGE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class StageCall:
    """One parsed stage: its name, positional arguments and keyword arguments."""

    name: str
    args: tuple[Value, ...] = ()
    kwargs: dict[str, Value] = field(default_factory=dict)


def _value(token: str, where: str) -> Value:
    token = token.strip()
    if not token:
        raise ValueError(f"{where}: empty argument")
    if _INT_RE.match(token):
        return int(token)
    try:
        number = float(token)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"{where}: argument {token!r} is not a finite number")
        return number
    if token.lower() in ("true", "false"):
        return token.lower() == "true"
    if _IDENT_RE.match(token):
        return token
    raise ValueError(f"{where}: cannot read argument {token!r} (expected a number or a word)")


def parse_stage(text: str) -> StageCall:
    """Parse ``name`` or ``name(a, b, key=value)``."""
    match = _STAGE_RE.match(text)
    if not match:
        raise ValueError(f"cannot read pipeline stage {text.strip()!r}: expected name or name(arg, ...)")
    name, body = match.group(1).lower(), match.group(2)
    args: list[Value] = []
    kwargs: dict[str, Value] = {}
    if body is not None and body.strip():
        for part in body.split(","):
            if "=" in part:
                key, raw = part.split("=", 1)
                key = key.strip().lower()
                if not _IDENT_RE.match(key):
                    raise ValueError(f"{name}: bad keyword {key!r}")
                if key in kwargs:
                    raise ValueError(f"{name}: keyword {key!r} given twice")
                kwargs[key] = _value(raw, name)
            else:
                args.append(_value(part, name))
    return StageCall(name, tuple(args), kwargs)


def parse_spec(text: str) -> list[StageCall]:
    """Split a spec string on ``>`` and parse each stage; an empty spec means no stages."""
    if not isinstance(text, str):
        raise ValueError(f"pipeline spec must be a string, got {type(text).__name__}")
    if not text.strip():
        return []
    return [parse_stage(part) for part in text.split(">")]


class BySpec:
    """Equal, hashed and shown by the canonical spec (stages and pipelines alike)."""

    spec: str
    family: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BySpec) and other.family == self.family and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def format_value(value: Value) -> str:
    """Canonical text for an argument (``repr`` of floats round-trips exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_call(name: str, args: Iterable[Value] = (), kwargs: dict[str, Value] | None = None) -> str:
    """``name`` or ``name(a, b, key=value)`` in canonical form."""
    parts = [format_value(a) for a in args]
    parts += [f"{k}={format_value(v)}" for k, v in (kwargs or {}).items()]
    return f"{name}({', '.join(parts)})" if parts else name


REQUIRED: Any = object()  # marks an argument without a default


@dataclass(frozen=True)
class Arg:
    """One declared stage argument: its name, type, range and default.

    ``kind`` is ``"int"``, ``"float"`` or ``"flag"`` (a bare word, or ``word=true``). Value arguments are
    positional in declaration order (or ``name=value``); ``keyword_only`` ones are written ``name=value`` only.
    The canonical spec writes every value that differs from its default (required ones always).
    """

    name: str
    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    default: Any = REQUIRED
    keyword_only: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def allowed(self) -> str:
        """The allowed values in words: ``1..16``, ``(0.0, 1.0]``, ``true or false``."""
        if self.kind == "int":
            return f"{self.lo}..{self.hi}"
        if self.kind == "float":
            return f"{'(' if self.lo_open else '['}{float(self.lo)}, {float(self.hi)}]"
        return "true or false"

    def check(self, value: Any, fail: Callable[[str], ValueError]) -> Value | None:
        """The validated, normalised value (int, float or bool); ``fail`` builds the error to raise."""
        if self.kind == "flag":
            if not isinstance(value, bool | np.bool_):
                raise fail(f"{self.name} must be true or false, got {_short(value)}")
            return bool(value)
        if value is None and self.default is None:
            return None
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise fail(f"{self.name} must be a number, got {_short(value)}")
        if self.kind == "int":
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                raise fail(f"{self.name} must be an integer in {self.allowed}, got {_short(value)}")
            number = int(value)
            if not self.lo <= number <= self.hi:
                raise fail(f"{self.name} must be an integer in {self.allowed}, got {_short(value)}")
            return number
        number = float(value)
        if not ((self.lo < number if self.lo_open else self.lo <= number) and number <= self.hi):
            raise fail(f"{self.name} must be in {self.allowed}, got {_short(value)}")
        return number


def Int(name: str, lo: int, hi: int, default: Any = REQUIRED, *, keyword_only: bool = False) -> Arg:  # noqa: N802
    """An integer argument in ``lo..hi``."""
    return Arg(name, "int", lo, hi, default=default, keyword_only=keyword_only)


def Float(name: str, lo: float, hi: float, default: Any = REQUIRED, *, lo_open: bool = False) -> Arg:  # noqa: N802
    """A float argument in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    return Arg(name, "float", lo, hi, lo_open, default)


def Flag(name: str) -> Arg:  # noqa: N802
    """An option word, off by default."""
    return Arg(name, "flag", default=False)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def usage(name: str, args: Sequence[Arg]) -> str:
    """One line: ``uniform(bits[, stochastic][, per_channel][, block=N]) with bits in 1..16, ...``."""
    parts = []
    for a in args:
        word = a.name if a.kind == "flag" else f"{a.name}=N" if a.keyword_only else a.name
        parts.append(word if a.required else f"[{word}]")
    call = name
    if parts:
        call += "(" + ", ".join(parts).replace(", [", "[, ") + ")"
        if call.startswith(f"{name}(["):
            call = f"{name}[(" + call[len(name) + 2 :].replace("])", ")]", 1)
    ranges = [f"{a.name} in {a.allowed}" for a in args if a.kind != "flag"]
    return call + (" with " + ", ".join(ranges) if ranges else "")


def bind_call(name: str, args: Sequence[Arg], call: StageCall, fail: Callable[[str], ValueError]) -> dict:
    """Map a parsed call onto declared arguments: value arguments in order (positional numbers or
    ``name=``), then option words (bare or ``word=true``), then keyword-only ones; anything left over fails."""
    pos = list(call.args)
    kw = dict(call.kwargs)
    out: dict[str, Any] = {}
    for a in args:
        if a.kind == "flag" or a.keyword_only:
            continue
        if a.name in kw:
            out[a.name] = kw.pop(a.name)
        elif pos and not isinstance(pos[0], str):
            out[a.name] = pos.pop(0)
        elif a.required:
            raise fail(f"missing {a.name}")
    flags = {a.name for a in args if a.kind == "flag"}
    rest: list[Value] = []
    for value in pos:
        if not isinstance(value, str):
            rest.append(value)
        elif value.lower() in flags:
            out[value.lower()] = True
        else:
            allowed = ", ".join(sorted(flags)) or "none"
            raise fail(f"unknown option {_short(value)} (allowed: {allowed})")
    for a in args:
        if (a.kind == "flag" or a.keyword_only) and a.name in kw:
            out[a.name] = kw.pop(a.name)
    if rest:
        raise fail(f"unexpected argument(s) {', '.join(format_value(v) for v in rest)}")
    if kw:
        raise fail(f"unknown keyword(s) {', '.join(sorted(kw))}")
    return out


def bind_values(
    name: str, args: Sequence[Arg], given: tuple, named: dict, fail: Callable[[str], ValueError]
) -> dict[str, Any]:
    """Python-call binding (positional in declaration order, then by name), defaults filled in, every value
    checked."""
    if len(given) > len(args):
        raise fail(f"takes at most {len(args)} argument(s), got {len(given)}")
    values = dict(zip((a.name for a in args), given, strict=False))
    for key, value in named.items():
        if key in values:
            raise fail(f"{key} given twice")
        values[key] = value
    unknown = set(values) - {a.name for a in args}
    if unknown:
        raise fail(f"unknown keyword(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for a in args:
        if a.name in values:
            out[a.name] = a.check(values[a.name], fail)
        elif a.required:
            raise fail(f"missing {a.name}")
        else:
            out[a.name] = a.default
    return out


def format_args(name: str, args: Sequence[Arg], values: dict[str, Any]) -> str:
    """Canonical ``name(v1, v2, flag, key=v)``: values equal to their default are left out."""
    positional: list[Value] = []
    flags: list[Value] = []
    keywords: dict[str, Value] = {}
    for a in args:
        value = values[a.name]
        if not a.required and value == a.default:
            continue
        if a.kind == "flag":
            flags.append(a.name)
        elif a.keyword_only:
            keywords[a.name] = value
        else:
            positional.append(value)
    return format_call(name, positional + flags, keywords)
