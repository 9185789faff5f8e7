"""A SuperNode that comes back under a new node id (no node auth) is found again by its partition id."""

from __future__ import annotations

from flwr.app import Context, RecordDict

from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.rediscovery import rediscover
from fedcompress.flower.sampling import discover_partitions
from tests.flower.loopback import LoopbackGrid


def test_restarted_node_with_a_new_id_is_found_again(shared_data) -> None:  # noqa: ANN001
    from fedcompress.config import defaults

    rc = {**defaults(), "num-partitions": 3, "clients-per-round": 3, "data-dir": str(shared_data.resolve())}
    grid = LoopbackGrid(client_app, rc, 3)
    partitions = discover_partitions(grid, 3)
    assert rediscover(grid, partitions) == partitions  # nothing new: no query sent
    old = partitions[1]
    ctx = grid.contexts.pop(old)  # the node dies...
    grid.contexts[424242] = Context(1, 424242, dict(ctx.node_config), RecordDict(), rc)  # ...and returns
    moved = rediscover(grid, partitions)
    assert moved == {**partitions, 1: 424242}
