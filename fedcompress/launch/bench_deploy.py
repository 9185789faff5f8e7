"""Seconds per round on the deployment engine: fedcompress against stock Flower FedAvg on the same setup.

Both run on a fresh local federation (SuperLink + N SuperNodes on loopback, same TLS/auth settings, same data
and model); runs alternate A/B/A/B so a busy machine slows both alike. `--flower-poll` keeps Flower's 1 s
SuperExec polling for both (the "before"); the default uses 0.1 s.

    python -m fedcompress.launch.bench_deploy --nodes 2 --rounds 3 --reps 2
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedcompress.launch.deployment import DeployError, Federation, _exit_on_sigterm, deploy
from fedcompress.launch.process import write_run_config

PLAIN_APP = Path(__file__).resolve().parents[2] / "simulations" / "baselines" / "plain_fedavg"


def deploy_plain(
    nodes: int, rounds: int, workdir: Path, fast_poll: bool, timeout: float = 900
) -> list[float]:
    """Stock Flower FedAvg (simulations/baselines/plain_fedavg) on a fresh local federation; its round times."""
    timing = workdir / "timing.json"
    overrides = {
        "dataset": "digits", "partitioning": "iid", "num-partitions": nodes, "clients-per-round": nodes,
        "num-server-rounds": rounds, "timing-file": str(timing), "local-epochs": 2, "batch-size": 32,
        "learning-rate": 0.1,
    }  # fmt: skip
    fed = Federation(workdir, tls=True, auth=True, fast_poll=fast_poll)
    deadline = time.monotonic() + timeout
    try:
        fed.start_superlink()
        fed.start_supernodes(nodes)
        cfg = write_run_config(workdir / "run-config.toml", overrides)
        fed._spawn(
            "flwr-run",
            ["flwr", "run", str(PLAIN_APP), "deploy-local", "--stream", "--run-config", str(cfg)],
            fed.env(),
        )
        while not timing.exists():
            if time.monotonic() > deadline:
                raise DeployError(f"plain app did not finish in {timeout:.0f} s\n{fed.log_tails()}")
            time.sleep(0.5)
        time.sleep(0.5)
        return json.loads(timing.read_text())["round_seconds"]
    finally:
        fed.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fedcompress.launch.bench_deploy", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument(
        "--flower-poll", action="store_true", help="Flower's 1 s SuperExec task polling (the 'before')"
    )
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # `finally` stops the federation on SIGTERM too
    fast = not args.flower_poll
    out: dict[str, list[float]] = {"fedcompress": [], "plain": []}
    for rep in range(args.reps):
        root = Path(tempfile.mkdtemp(prefix=f"fedcompress-bench-deploy-{rep}-"))
        r = deploy(
            args.nodes, args.rounds, tls=True, auth=True, workdir=root / "fc", fast_poll=fast,
            run_config={"local-epochs": 2, "partitioning": "iid", "uplink": "identity", "downlink": "identity"},
        )  # fmt: skip
        out["fedcompress"].append(r["seconds_per_round"])
        gaps = deploy_plain(args.nodes, args.rounds, root / "plain", fast)
        out["plain"].append(statistics.mean(gaps))
        print(
            json.dumps(
                {"rep": rep, "fedcompress_s": out["fedcompress"][-1], "plain_s": round(out["plain"][-1], 2)}
            ),
            flush=True,
        )
    summary: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in out.items()}
    summary.update(
        nodes=args.nodes, rounds=args.rounds, reps=args.reps, superexec_poll_s=0.1 if fast else 1.0
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
