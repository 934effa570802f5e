"""The one argument parser of the ``fnnet`` command and the runner: argparse with a one-line usage error and exit
status 2, plain-text help derived from docstrings, and a quiet exit when stdout's reader goes away."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Callable

__all__ = ["UsageParser", "plain", "quiet_on_closed_pipe", "CLOSED_PIPE_STATUS"]

#: Exit status when stdout's reader closed the pipe (``fnnet ... | head -1``): 128 + SIGPIPE, as a shell reports
#: a command killed by SIGPIPE.
CLOSED_PIPE_STATUS = 141

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :func:`x`, :class:`~a.B` -> x, a.B
_LITERAL = re.compile(r"``([^`]+)``")  # ``x`` -> x
_STRONG = re.compile(r"\*\*([^*]+)\*\*")  # **x** -> x


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


def plain(doc: str, paragraph: int = 0) -> str:
    """Paragraph ``paragraph`` of docstring ``doc`` as one line of plain text, for a ``--help`` description.

    Sphinx roles become their target (``:func:`a.b``` -> ``a.b``), literals and bold their text, and the
    paragraph's lines are joined with single spaces; the docstring itself keeps its markup for Sphinx.
    """
    text = " ".join(doc.split("\n\n")[paragraph].split())
    return _STRONG.sub(r"\1", _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text)))


def quiet_on_closed_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main`` so that a closed stdout pipe ends it quietly with :data:`CLOSED_PIPE_STATUS`.

    When the reader of stdout exits early (``| head -1``), the next write or the final flush raises
    ``BrokenPipeError``; the wrapper then points stdout at ``os.devnull`` (so the interpreter's own flush at exit
    cannot raise again) and returns 141, with no traceback. This is the handling the Python documentation gives
    for SIGPIPE (the ``signal`` module, "Note on SIGPIPE"). stdout is flushed before ``main``'s status (or its
    ``SystemExit``, e.g. after ``--help``) is passed on, so a closed pipe is always noticed here.
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            try:
                return main(*args, **kwargs)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return CLOSED_PIPE_STATUS

    return wrapped
