"""The `fedcompress study run|report` handlers (the parser lives in fedcompress/cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedcompress.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 0 when every selected cell is complete, 1 when some failed (the others still ran)."""
    from fedcompress.studies.runner import run_study

    index = run_study(
        args.spec, quick=args.quick, out=Path(args.out) if args.out else None, only=args.only,
        progress=not args.no_progress, verbose=args.verbose, timeout=args.timeout, retries=args.retries,
    )  # fmt: skip
    return 1 if index["counts"]["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedcompress.studies.report import write_report

    targets = {}
    for item in args.target or []:
        name, _, value = item.partition("=")
        try:
            targets[name] = float(value)
        except ValueError:
            raise ConfigError(f"--target {item!r}: expected DATASET=ACCURACY, e.g. femnist=0.8") from None
    path = write_report(Path(args.dir), Path(args.out) if args.out else None, targets)
    print(path)
    return 0
