"""The ``fnnet`` command: ``fnnet check``, ``fnnet train``, ``fnnet bench``, ``fnnet --version``.

Usage errors (unknown flags, bad values) exit 2 with one line on stderr (:class:`fnnet.cli.parser.UsageParser`);
``fnnet check`` exits 1 when any catalog entry fails its bars; a reader of stdout that exits early
(``fnnet ... | head -1``) ends the command quietly with status 141 (:func:`fnnet.cli.parser.quiet_on_closed_pipe`).
Modules: :mod:`fnnet.cli.parser`, :mod:`fnnet.cli.check`, :mod:`fnnet.cli.train`, :mod:`fnnet.cli.bench`.
"""

from __future__ import annotations

import sys
from typing import Sequence

import fnnet
from fnnet.cli import bench, check, train
from fnnet.cli.parser import UsageParser, quiet_on_closed_pipe

__all__ = ["UsageParser", "main"]

COMMANDS = {"check": check, "train": train, "bench": bench}


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    """``fnnet <command> ...``: parse ``argv`` (default ``sys.argv[1:]``) and run the command; the exit status."""
    parser = UsageParser(prog="fnnet", description="fnnet: hand-written backpropagation, checked against jax.grad.")
    parser.add_argument("--version", action="version", version=f"fnnet {fnnet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=UsageParser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
