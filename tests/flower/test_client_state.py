"""The client state store writes a version only when there is state to keep (or was, in an earlier version)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedcompress.flower.client_state import state_store_mod
from fedcompress.flower.compat import set_task_identity
from fedcompress.flower.protocol import RESIDUAL, SERVER_ROUND
from fedcompress.flower.records import numpy_to_record


def _train(context: Context, server_round: int, state: dict | None) -> None:
    set_task_identity()
    msg = Message(RecordDict({"config": ConfigRecord({SERVER_ROUND: server_round})}), dst_node_id=1,
                  message_type="train")  # fmt: skip

    def call_next(m: Message, ctx: Context) -> Message:
        for k in list(ctx.state.keys()):
            del ctx.state[k]
        for k, v in (state or {}).items():
            ctx.state[k] = v
        return Message(RecordDict(), reply_to=m)

    state_store_mod(msg, context, call_next)


def test_nothing_written_until_there_is_state(tmp_path: Path) -> None:
    ctx = Context(1, 1, {"partition-id": 3}, RecordDict(), {"checkpoint": True, "run-dir": str(tmp_path)})
    folder = tmp_path / "client-state" / "p3"
    _train(ctx, 1, None)
    assert not folder.exists() or not list(folder.iterdir())  # identity codecs: no fsyncs per message
    residual = numpy_to_record({"w": np.ones(3, np.float32)})
    _train(ctx, 2, {RESIDUAL: residual})
    _train(ctx, 3, None)  # state gone after a version existed: an (empty) version says so
    assert sorted(p.name for p in folder.iterdir()) == ["r2.npz", "r3.npz"]
