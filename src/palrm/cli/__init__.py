"""`palrm` command line: one module per command in this package, shared flags in `flags.py`.

    train  evaluate  adapt  score  report  quickstart  export  serve  onboard  data  bench

`main(argv) -> int` runs in-process (tests call it directly). Errors reach the user as one clear line
and exit code 2; `--debug` shows the traceback. Every command module defines
`add_parser(subparsers)` (its flags, with `func` set to its command function); argparse is used
nowhere else in palrm.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from palrm.cli import adapt, bench, data, evaluate, export, onboard, quickstart, report, score, serve, train
from palrm.errors import PalrmError

__all__ = ["COMMANDS", "EXIT_ERROR", "build_parser", "entrypoint", "main"]

EXIT_ERROR = 2
COMMANDS = (train, evaluate, adapt, score, report, quickstart, export, serve, onboard, data, bench)  # in --help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="palrm", description="Personalized reward models with PAL (pluralistic alignment).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"palrm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _version() -> str:
    from palrm.version import __version__

    return __version__


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (not the stream of the first call)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    root = logging.getLogger("palrm")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except PalrmError as exc:
        if args.debug:
            raise
        print(f"palrm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entrypoint() -> None:  # console script
    sys.exit(main())
