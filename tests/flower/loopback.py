"""A Grid that delivers messages to the real ClientApp in this process: the full message path (mods, records,
context.state between rounds) without Ray start-up, for fast strategy tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


class LoopbackGrid:
    def __init__(
        self,
        client_app: Any,
        run_config: dict[str, Any],
        num_partitions: int,
        tamper: Callable[[int, Message], Message] | None = None,
    ) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.app = client_app
        # node ids unrelated to partition ids, as in Flower
        self.contexts = {
            1000 + 7 * p: Context(1, 1000 + 7 * p, {"partition-id": p, "num-partitions": num_partitions}, RecordDict(), run_config)
            for p in range(num_partitions)
        }
        self.tamper = tamper
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            self.sent.append(msg)
            ctx = self.contexts[msg.metadata.dst_node_id]
            reply = self.app(msg, ctx)
            if self.tamper is not None:
                reply = self.tamper(int(ctx.node_config["partition-id"]), reply)
            replies.append(reply)
        return replies
