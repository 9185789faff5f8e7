"""A Grid that delivers messages to the real ClientApp in this process: the full message path (mods, records,
context.state between rounds) without Ray start-up, for fast strategy tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict

from fedcompress.flower.compat import set_task_identity
from fedcompress.flower.payload import payload_of


class LoopbackGrid:
    def __init__(
        self,
        client_app: Any,
        run_config: dict[str, Any],
        num_partitions: int,
        tamper: Callable[[int, Message], Message] | None = None,
    ) -> None:
        set_task_identity()
        self.app = client_app
        # node ids unrelated to partition ids, as in Flower
        self.contexts = {
            1000 + 7 * p: Context(
                1,
                1000 + 7 * p,
                {"partition-id": p, "num-partitions": num_partitions},
                RecordDict(),
                run_config,
            )
            for p in range(num_partitions)
        }
        self.tamper = tamper
        self.sent: list[Message] = []
        self.sent_encoded: list[bool] = []  # whether each train message carried an encoded payload when sent

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            self.sent.append(msg)
            if msg.metadata.message_type == "train":
                self.sent_encoded.append(payload_of(msg.content["arrays"]) is not None)
            ctx = self.contexts[msg.metadata.dst_node_id]
            try:
                reply = self.app(msg, ctx)
            except Exception as err:  # as Flower does: a ClientApp exception becomes an error reply
                reply = Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(int(ctx.node_config["partition-id"]), reply)
            replies.append(reply)
        return replies
