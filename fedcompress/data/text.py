"""Shakespeare by speaking character, LEAF-style next-character prediction.

Each user (play, character) is one natural id. Following LEAF: a user's lines are joined with single spaces
(runs of spaces collapsed), every 80-character window predicts the next character, and symbols are LEAF's
80-character vocabulary (``LEAF_VOCAB``; the few symbols outside it, e.g. ``{ @ / _``, map to space).

Split (LEAF-style, per user): windows whose *target* lies in the first 90% of the user's text are train, the
rest (the held-out tail) form the central test set, so no target character is in both.

Users: kept if their text yields at least ``MIN_WINDOWS`` = 64 windows (984 of 1,089 users; LEAF's usual
``min 64 samples``); dataset ``shakespeare-all`` keeps every user with a train window (1,038: the other 51
speak fewer than 82 characters in all, too few for one window). Memory: all 4.0M windows as int64 would take 2.6 GB, so windows are taken with a stride
(``STRIDE`` = 16, every 16th start position; ~250k train windows, ~160 MB); every kept user still has at least
one train and one test window. ``load_shakespeare(data_dir, stride=1)`` gives the full set when memory allows.
Groups follow the file's user order (plays alphabetically, characters in order of appearance).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

from fedcompress.data.base import FederatedDataset, require_path
from fedcompress.errors import ConfigError

LEAF_VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
SEQ_LEN = 80
MIN_WINDOWS = 64
STRIDE = 16
TRAIN_FRACTION = 0.9
PLAYS_FILE = "shakespeare_plays/shakespeare_by_play_and_character.json.gz"
PLAYS_FORMAT = '{"users": [names], "user_lines": {name: [speech lines]}} (gzip JSON)'

_SPACE = LEAF_VOCAB.index(" ")
_LUT = np.full(256, _SPACE, dtype=np.uint8)
_LUT[np.frombuffer(LEAF_VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(LEAF_VOCAB), dtype=np.uint8)


def encode(text: str) -> np.ndarray:
    """LEAF vocabulary ids (uint8) of ``text``; characters outside the vocabulary become spaces."""
    raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    return _LUT[raw]


def decode(ids: np.ndarray) -> str:
    """Inverse of ``encode`` (for inspection and tests)."""
    return "".join(LEAF_VOCAB[i] for i in np.asarray(ids).reshape(-1))


def _user_text(lines: list[str]) -> str:
    return re.sub(r" {2,}", " ", " ".join(line.replace("\n", " ") for line in lines))


def read_plays(path: Path) -> tuple[list[str], list[str]]:
    """(user names, joined text per user) from the by-character JSON."""
    require_path(path, "Shakespeare by-character JSON")
    try:
        with gzip.open(path, "rb") as f:
            blob = json.loads(f.read())
        users = list(blob["users"])
        texts = [_user_text(blob["user_lines"][u]) for u in users]
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"'{path}': cannot read ({exc!r}); expected {PLAYS_FORMAT}") from exc
    return users, texts


def window_starts(length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test window start offsets within one user's text of ``length`` characters."""
    n_windows = length - SEQ_LEN
    first_test = int(np.floor(TRAIN_FRACTION * n_windows))  # windows >= this have targets in the tail
    return np.arange(0, first_test, stride), np.arange(first_test, n_windows, stride)


def load_shakespeare(
    data_dir: Path, stride: int = STRIDE, min_windows: int = MIN_WINDOWS
) -> FederatedDataset:
    """Build the next-character dataset; see the module doc for split, user filter and stride."""
    path = data_dir / PLAYS_FILE if data_dir.is_dir() else data_dir
    _, texts = read_plays(path)
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    kept = np.flatnonzero(lengths - SEQ_LEN >= min_windows)
    if len(kept) == 0:
        raise ConfigError(f"'{path}': no user has {min_windows} windows of {SEQ_LEN} characters")
    ids = encode("".join(texts[i] for i in kept))
    offsets = np.concatenate([[0], np.cumsum(lengths[kept])[:-1]])
    starts_tr, starts_te, groups = [], [], []
    for g, (off, length) in enumerate(zip(offsets, lengths[kept], strict=True)):
        tr, te = window_starts(int(length), stride)
        starts_tr.append(tr + off)
        starts_te.append(te + off)
        groups.append(np.full(len(tr), g, dtype=np.int64))
    window = np.arange(SEQ_LEN + 1)

    def gather(starts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        seq = ids[np.concatenate(starts)[:, None] + window]  # (N, 81) uint8: 80 inputs + target
        return seq[:, :SEQ_LEN].astype(np.int64), seq[:, SEQ_LEN].astype(np.int64)

    x_train, y_train = gather(starts_tr)
    x_test, y_test = gather(starts_te)
    return FederatedDataset(
        "shakespeare", x_train, y_train, x_test, y_test, len(LEAF_VOCAB), np.concatenate(groups), "lstm"
    )
