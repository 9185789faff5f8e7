"""The `fedcompress` command: simulate, bench, study, export."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from fedcompress.errors import ConfigError, FedCompressError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_run_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per run-config key (`--num-server-rounds`, plus its short alias such as `--rounds`), with the
    help, type and choices of the declaration in `fedcompress.config`."""
    from fedcompress.config import choices_of, declared

    for f in declared():
        key = f.name.replace("_", "-")
        flags = [f"--{key}"] + ([f.metadata["flag"]] if f.metadata["flag"] else [])
        typ = {"bool": _bool, "int": int, "float": float, "str": str}[str(f.type)]
        p.add_argument(
            *flags, dest=f.name, type=typ, choices=choices_of(f), default=None,
            help=f"{f.metadata['help']} (default: {f.default!r})",
        )  # fmt: skip


def run_config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`--run-config 'k=v ...'` first, then the flags a user gave (flags win)."""
    from fedcompress.config import check_keys, declared, parse_overrides

    overrides: dict[str, Any] = parse_overrides(args.run_config)
    check_keys(overrides)
    for f in declared():
        value = getattr(args, f.name)
        if value is not None:
            overrides[f.name.replace("_", "-")] = value
    return overrides


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a federated simulation on Flower's simulation engine")
    add_run_config_flags(p)
    p.add_argument(
        "--run-config", default="", help="extra run-config overrides, 'k=v k2=\"s\"' (any app key)"
    )
    p.add_argument(
        "--compare-fp32", action="store_true",
        help="also run the same config with uncompressed (fp32) updates both ways, and compare bytes and accuracy",
    )  # fmt: skip
    p.add_argument("--cpus-per-client", type=float, default=1.0, help="CPUs Ray gives each virtual client")
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own log lines too")
    p.add_argument(
        "--resume", metavar="RUN_DIR", default=None,
        help="continue a killed run from its checkpoint (its stored config; the final model is the same bits)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fedcompress.launch.simulation import simulate

    overrides = run_config_overrides(args)
    summary = simulate(
        overrides, cpus_per_client=args.cpus_per_client, verbose=args.verbose, resume=args.resume
    )
    if args.compare_fp32:
        from fedcompress.launch.compare import compare_with_fp32

        compare_with_fp32(overrides, summary, cpus_per_client=args.cpus_per_client, verbose=args.verbose)
    else:
        print(json.dumps(summary))
    return 0


def _add_passthrough(
    sub: argparse._SubParsersAction, name: str, help_text: str, choices: dict[str, str], run: Any
) -> None:
    """A subcommand whose first word picks a tool and whose other words are that tool's own arguments."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("what", choices=list(choices), help="; ".join(f"{k}: {v}" for k, v in choices.items()))
    p.add_argument(
        "rest", nargs=argparse.REMAINDER, help=f"arguments of the tool (`fedcompress {name} WHAT --help`)"
    )
    p.set_defaults(func=lambda args: int(run(args.what, args.rest) or 0))


def _bench(what: str, rest: list[str]) -> int:
    from importlib import import_module

    import_module(f"fedcompress.bench.{what}").main(rest)  # prints its table, then one JSON line
    return 0


def _deploy(what: str, rest: list[str]) -> int:
    from fedcompress.launch.deployment import main as deploy_local

    return deploy_local(rest, prog=f"fedcompress deploy {what}")


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a grid of simulations from a TOML spec, and report on it")
    ssub = p.add_subparsers(dest="study_command", required=True)
    run = ssub.add_parser("run", help="run every cell of a study spec (resumes; failed cells do not stop it)")
    run.add_argument("spec", help="a spec file, or the name of a shipped spec (e.g. femnist_uplink)")
    run.add_argument("--quick", action="store_true", help="the spec's [quick] variant (CI-sized)")
    run.add_argument("--out", help="output folder (default runs/studies/<name>[-quick])")
    run.add_argument("--only", help="run only cells whose id matches this glob (plain text: substring)")
    run.add_argument("--timeout", type=float, help="seconds allowed per cell")
    run.add_argument("--retries", type=int, default=1, help="reruns of a cell whose simulation broke")
    run.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    run.add_argument("--verbose", action="store_true", help="show every round line and Flower's own output")
    report = ssub.add_parser("report", help="write report.md, report.csv and plots for a study folder")
    report.add_argument("dir", help="the study folder (OUT of `study run`)")
    report.add_argument("--out", help="where to write the report (default: the study folder)")
    report.add_argument("--target", action="append", help="override a target: DATASET=ACC (repeatable)")

    def _run(args: argparse.Namespace) -> int:
        from fedcompress.studies.commands import cmd_run

        return cmd_run(args)

    def _report(args: argparse.Namespace) -> int:
        from fedcompress.studies.commands import cmd_report

        return cmd_report(args)

    run.set_defaults(func=_run)
    report.set_defaults(func=_report)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's final model as a deployable artefact and measure it")
    p.add_argument("run_dir", help="a finished run directory (it holds models/<tier>.pt)")
    p.add_argument("--tier", default=None, help="which tier's model (tiered runs; default the largest)")
    p.add_argument("--format", default="torchscript", choices=["torchscript", "int8", "state_dict"])
    p.add_argument("--out", required=True, help="file to write")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from fedcompress.export import export_from_run

    print(json.dumps(export_from_run(args.run_dir, args.out, args.format, args.tier)))
    return 0


def _add_certs(sub: argparse._SubParsersAction) -> None:
    from fedcompress.launch.certs import register

    register(sub)


def _add_device_model(sub: argparse._SubParsersAction) -> None:
    from fedcompress.tiers.commands import register

    register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcompress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_passthrough(
        sub, "bench", "benchmarks that print numbers",
        {"codecs": "codec throughput and sizes", "reply": "bytes of a compressed train reply, object by object",
         "index_coding": "index bytes of real FEMNIST updates, flat against grid coding"},
        _bench,
    )  # fmt: skip
    _add_export(sub)
    _add_device_model(sub)
    _add_certs(sub)
    _add_study(sub)
    _add_passthrough(
        sub, "deploy", "run the app on Flower's deployment engine (SuperLink + SuperNodes)",
        {"local": "all processes on this machine, on loopback"}, _deploy,
    )  # fmt: skip
    return parser


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM becomes SystemExit, so launchers' `finally` blocks stop the SuperLinks and Ray workers they started."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"fedcompress: error: {err}", file=sys.stderr)
        return 2
    except FedCompressError as err:  # a run that did not finish: one line, not a traceback
        print(f"fedcompress: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
