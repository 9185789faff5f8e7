"""The Python blocks of docs/interop.md run as written, so the documented integration cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_server_and_client_blocks() -> None:
    assert (
        len(BLOCKS) >= 2
        and any("FedCompress(" in b for b in BLOCKS)
        and any("compression_mod" in b for b in BLOCKS)
    )


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_block_runs(index: int) -> None:
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)  # noqa: S102 - our own doc
    if "strategy" in namespace:  # the server block builds a working wrapper
        assert namespace["strategy"].clients_per_round == 2
    if "app" in namespace:  # the client block registers the capability query and a train function
        from flwr.clientapp import ClientApp

        assert isinstance(namespace["app"], ClientApp)
        assert {"query.fedcompress", "train.default"} <= set(namespace["app"]._registered_funcs)
