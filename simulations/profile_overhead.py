"""Where a round's time goes, in one process: fedcompress's ServerApp and ClientApp against the lean stock app
(`simulations/baselines/plain_fedavg`), both driven through the same in-process grid (no Ray, no gRPC), so the
difference is fedcompress's own work per round. Optionally under cProfile.

    python -m simulations.profile_overhead --rounds 6 --repeats 2 [--profile ours.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict

from fedcompress.flower.compat import set_task_identity

PLAIN_APP = Path(__file__).resolve().parent / "baselines" / "plain_fedavg" / "plain_app.py"


class InProcessGrid:
    """Delivers each message to a ClientApp in this process, one node per partition (node ids unlike them)."""

    def __init__(self, client_app: Any, run_config: dict[str, Any], num_partitions: int) -> None:
        set_task_identity()
        self.app = client_app
        self.contexts = {
            1000 + 7 * p: Context(1, 1000 + 7 * p, {"partition-id": p, "num-partitions": num_partitions},
                                  RecordDict(), run_config)
            for p in range(num_partitions)
        }  # fmt: skip
        self.client_seconds = 0.0  # CPU seconds inside the ClientApp
        self.stamps: list[tuple[float, float]] = []  # (wall, CPU) at each round's train send

    def round_seconds(self, skip: int) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds from one round's train send to the next's (rounds after `skip`)."""
        gaps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return [g[0] for g in gaps[skip:]], [g[1] for g in gaps[skip:]]

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.stamps.append((time.perf_counter(), time.process_time()))
        replies = []
        for msg in messages:
            t = time.process_time()
            try:
                replies.append(self.app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as err:  # as Flower does
                replies.append(Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=msg))
            self.client_seconds += time.process_time() - t
        return replies


def common_config(rounds: int, num_clients: int, clients_per_round: int) -> dict[str, Any]:
    from fedcompress.data import default_data_dir

    return {
        "dataset": "femnist", "data-dir": str(default_data_dir().resolve()), "partitioning": "natural",
        "num-partitions": num_clients, "clients-per-round": clients_per_round, "num-server-rounds": rounds,
        "learning-rate": 0.05, "batch-size": 32, "local-epochs": 1, "seed": 0,
    }  # fmt: skip


def stub_work() -> None:
    """No training, no evaluation, in both apps (the same functions, so the same patch)."""
    import fedcompress.flower.clientapp as ours_client
    import fedcompress.ondevice as ondevice

    plain = load_plain()
    ours_client.train = plain.train = lambda *a, **k: 0.5  # type: ignore[attr-defined]
    ondevice.evaluate = plain.evaluate = lambda *a, **k: (1.0, 0.5)  # type: ignore[attr-defined]


def load_plain() -> Any:
    """The stock app's module (imported once: both the run and the stubs use this one)."""
    if "plain_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("plain_app", PLAIN_APP)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["plain_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["plain_app"]


def run_plain(common: dict[str, Any], tmp: Path) -> InProcessGrid:
    plain = load_plain()
    rc = {**common, "timing-file": ""}
    grid = InProcessGrid(plain.client, rc, int(common["num-partitions"]))
    plain.server._main(grid, Context(1, 0, {}, RecordDict(), rc))  # type: ignore[attr-defined]
    return grid


def run_ours(common: dict[str, Any], tmp: Path, extra: dict[str, Any]) -> InProcessGrid:
    from fedcompress.config import RunConfig, defaults
    from fedcompress.flower.clientapp import app as client_app
    from fedcompress.flower.serverapp import app as server_app

    rc = RunConfig.from_run_config(
        {**defaults(), **common, "uplink": "identity", "downlink": "identity", "eval-every": 1,
         "run-dir": str(tmp / "ours"), **extra}
    ).as_run_config()  # fmt: skip
    grid = InProcessGrid(client_app, rc, int(common["num-partitions"]))
    server_app._main(grid, Context(1, 0, {}, RecordDict(), rc))  # type: ignore[attr-defined]
    return grid


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-clients", type=int, default=105)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--skip", type=int, default=1, help="first rounds left out (caches warming)")
    ap.add_argument(
        "--profile",
        default="",
        help="write cProfile stats of the last repeat here (the stock app's: <path>.plain)",
    )
    ap.add_argument("--run-config", default="{}", help="JSON overrides for fedcompress's run")
    ap.add_argument("--stub-work", action="store_true",
                    help="replace training and evaluation by no-ops in both apps: what is left is framework")  # fmt: skip
    args = ap.parse_args(argv)
    common = common_config(args.rounds, args.num_clients, args.clients_per_round)
    if args.stub_work:
        stub_work()
    extra = json.loads(args.run_config)
    out: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for name, run in (("plain", lambda: run_plain(common, Path(tmp))),
                              ("ours", lambda: run_ours(common, Path(tmp), extra))):  # fmt: skip
                prof = cProfile.Profile() if args.profile and rep == args.repeats - 1 else None
                if prof:
                    prof.enable()
                grid = run()
                if prof:
                    prof.disable()
                    prof.dump_stats(args.profile + (".plain" if name == "plain" else ""))
                wall, cpu = grid.round_seconds(args.skip)
                out.setdefault(f"{name}_wall", []).extend(wall)
                out.setdefault(f"{name}_cpu", []).extend(cpu)
                out.setdefault(f"{name}_client_cpu", []).append(grid.client_seconds / len(grid.stamps))
        print(f"repeat {rep}: CPU s/round plain {statistics.median(out['plain_cpu']):.3f}, "
              f"ours {statistics.median(out['ours_cpu']):.3f} (medians so far)", flush=True)  # fmt: skip
    result: dict[str, Any] = {k: round(statistics.median(v), 4) for k, v in out.items()}
    result["ratio_cpu"] = round(result["ours_cpu"] / result["plain_cpu"], 4)
    result["ratio_wall"] = round(result["ours_wall"] / result["plain_wall"], 4)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
