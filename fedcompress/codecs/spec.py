"""Spec strings: ``"topk(0.01) > ef > uniform(4, stochastic) > entropy"`` parsed into stage calls.

Parsing is separate from the stages so that every stage validates its own arguments with one helper
(:class:`Args`) and every error names the stage and what it allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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


class Args:
    """Reads and validates one stage's arguments; every error names the stage and its usage line."""

    def __init__(self, call: StageCall, usage: str) -> None:
        self.call = call
        self.usage = usage
        self._pos = list(call.args)
        self._kw = dict(call.kwargs)

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.call.name}: {message}; usage: {self.usage}")

    def _number(self, value: Value, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{what} must be a number, got {value!r}")
        return value

    def take_int(
        self, what: str, lo: int, hi: int, default: int | None = None, key: str | None = None
    ) -> int:
        """An integer in ``[lo, hi]``: next positional argument, or ``key=`` if given."""
        value = self._take(what, default, key)
        number = self._number(value, what)
        if isinstance(number, float):
            if not number.is_integer():
                raise self.fail(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
            number = int(number)
        if not lo <= number <= hi:
            raise self.fail(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
        return int(number)

    def take_float(
        self,
        what: str,
        lo: float,
        hi: float,
        *,
        lo_open: bool = False,
        default: float | None = None,
        key: str | None = None,
    ) -> float:
        """A float in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
        value = self._take(what, default, key)
        number = float(self._number(value, what))
        ok = (lo < number if lo_open else lo <= number) and number <= hi
        if not ok:
            interval = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise self.fail(f"{what} must be in {interval}, got {value!r}")
        return number

    def _take(self, what: str, default: Value | None, key: str | None) -> Value:
        if key is not None and key in self._kw:
            return self._kw.pop(key)
        if self._pos and not isinstance(self._pos[0], str):
            return self._pos.pop(0)
        if default is not None:
            return default
        raise self.fail(f"missing {what}")

    def take_flags(self, allowed: Iterable[str]) -> set[str]:
        """Bare words among ``allowed`` (also accepted as ``word=true``)."""
        allowed = set(allowed)
        flags: set[str] = set()
        rest: list[Value] = []
        for value in self._pos:
            if isinstance(value, str):
                if value.lower() not in allowed:
                    raise self.fail(
                        f"unknown option {value!r} (allowed: {', '.join(sorted(allowed)) or 'none'})"
                    )
                flags.add(value.lower())
            else:
                rest.append(value)
        self._pos = rest
        for key in list(self._kw):
            if key in allowed and isinstance(self._kw[key], bool) and self._kw.pop(key):
                flags.add(key)
        return flags

    def take_kw_int(self, key: str, lo: int, hi: int) -> int | None:
        """An optional ``key=N`` integer in ``[lo, hi]``."""
        if key not in self._kw:
            return None
        return self.take_int(key, lo, hi, key=key)

    def done(self) -> None:
        """Fail on anything left over."""
        if self._pos:
            raise self.fail(f"unexpected argument(s) {', '.join(format_value(v) for v in self._pos)}")
        if self._kw:
            raise self.fail(f"unknown keyword(s) {', '.join(sorted(self._kw))}")


class NoArgs:
    """Mixin for a stage without arguments (``fp16``, ``entropy``...): parsing checks none were given, and the
    canonical spec is the bare name."""

    name: str
    usage: str

    @classmethod
    def from_call(cls, call: StageCall):  # noqa: ANN206 - returns an instance of the concrete stage
        Args(call, cls.usage).done()
        return cls()

    @property
    def spec(self) -> str:
        return self.name
