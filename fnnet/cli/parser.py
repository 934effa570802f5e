"""The one argument parser of the ``fnnet`` command: argparse with a one-line usage error and exit status 2."""

from __future__ import annotations

import argparse

__all__ = ["UsageParser"]


class UsageParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, ``<prog>: error: <message>``, and exits 2 (no usage dump).

    Subparsers made with ``add_subparsers(parser_class=UsageParser)`` behave alike; ``hint`` (e.g.
    ``"see fnnet train --help"``) is appended in parentheses when given.
    """

    def __init__(self, *args, hint: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str):  # noqa: D401
        tail = f" ({self.hint})" if self.hint else ""
        self.exit(2, f"{self.prog}: error: {message}{tail}\n")
