"""Flower 1.42's simulation engine on a two-node Ray cluster (both nodes on this machine): where do the
ClientApp actors run?

Starts a Ray head (`ray start --head --num-cpus 1`, its own temp dir so no other Ray user on the machine picks
it up) and a second node (`ray start --address ... --num-cpus 1`), runs `fedcompress simulate` with
RAY_ADDRESS pointing at the head, polls the cluster's actor table while it runs, prints the node of every
ClientAppActor, and stops exactly the Ray processes it started (by pid; never `ray stop`, which would stop every
Ray instance on the machine).

    python -m simulations.ray_two_nodes --out runs/ray_two_nodes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def _ray_pids(temp_dir: str) -> set[int]:
    """Processes of our cluster: their command line or environment names our temp dir / session."""
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(p.info["cmdline"] or ()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ray_two_nodes"))
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from fedcompress.launch.process import free_ports, kill_tree

    temp_dir = tempfile.mkdtemp(prefix="fcray-")  # short: Ray's socket paths have a length limit
    port, node_port = free_ports(2)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    address = f"127.0.0.1:{port}"
    started: set[int] = set()
    seen: dict[str, dict] = {}
    try:
        subprocess.run([RAY, "start", "--head", "--num-cpus", "1", "--port", str(port), "--temp-dir", temp_dir,
                        "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True)  # fmt: skip
        started |= _ray_pids(temp_dir)
        subprocess.run([RAY, "start", "--address", address, "--num-cpus", "1", "--disable-usage-stats",
                        "--node-manager-port", str(node_port)], env=env, check=True)  # fmt: skip
        started |= _ray_pids(temp_dir)
        import ray

        ray.init(address=address, logging_level="ERROR")
        nodes = {n["NodeID"]: n["NodeManagerPort"] for n in ray.nodes() if n["Alive"]}
        print(f"cluster: {len(nodes)} nodes {nodes}, CPUs {ray.cluster_resources().get('CPU')}", flush=True)
        stop = threading.Event()

        def poll() -> None:
            from ray._private import state

            while not stop.is_set():
                for aid, a in state.actors().items():
                    if "ClientAppActor" in str(a.get("ActorClassName", "")):
                        seen[aid] = {"node": a["Address"]["NodeID"], "state": a.get("State")}
                stop.wait(1.0)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        os.environ["RAY_ADDRESS"] = address  # the SuperLink, flwr-simulation and its ray.init() inherit it
        from fedcompress.launch.simulation import simulate

        summary = simulate(
            {"dataset": "digits", "num-partitions": args.clients, "clients-per-round": args.clients,
             "num-server-rounds": args.rounds, "run-dir": str((args.out / "run").resolve())},
            echo=print,
        )  # fmt: skip
        stop.set()
        poller.join()
        started |= _ray_pids(temp_dir)
        per_node = {n: sum(1 for a in seen.values() if a["node"] == n) for n in nodes}
        result = {
            "ray_address": address,
            "nodes": list(nodes),
            "client_app_actors": seen,
            "actors_per_node": per_node,
            "both_nodes_used": all(v > 0 for v in per_node.values()),
            "final_accuracy": summary.get("final_accuracy"),
            "rounds": summary.get("rounds"),
        }
        print(json.dumps({k: v for k, v in result.items() if k != "client_app_actors"}), flush=True)
        (args.out / "ray_two_nodes.json").write_text(json.dumps(result, indent=2))
        return result
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        try:
            import ray

            ray.shutdown()
        except Exception:  # noqa: BLE001, S110 - best effort before killing our cluster
            pass
        kill_tree(started | _ray_pids(temp_dir))


if __name__ == "__main__":
    main()
