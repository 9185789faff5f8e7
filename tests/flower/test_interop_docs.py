"""The Python blocks of docs/interop.md run as written, so the documented integration cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "interop.md", ROOT / "README.md")
BLOCKS = [
    (doc.name, block)
    for doc in DOCS
    for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
]


def test_doc_has_server_and_client_blocks() -> None:
    assert (
        len(BLOCKS) >= 5
        and any("FedCompress(" in b for _, b in BLOCKS)
        and any("compression_mod" in b for _, b in BLOCKS)
    )


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_block_runs(index: int) -> None:
    namespace: dict = {}
    name, block = BLOCKS[index]
    exec(compile(block, f"{name}[{index}]", "exec"), namespace)  # noqa: S102 - our own docs
    if "strategy" in namespace:  # the server block builds a working wrapper
        assert namespace["strategy"].clients_per_round == 2
    if "app" in namespace:  # the client block registers the capability query and a train function
        from flwr.clientapp import ClientApp

        assert isinstance(namespace["app"], ClientApp)
        assert {"query.fedcompress", "train.default"} <= set(namespace["app"]._registered_funcs)
