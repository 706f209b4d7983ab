"""The one exception type for mistakes a user can fix (bad paths, ranges, files)."""

from __future__ import annotations

import sys

__all__ = ["DeconvvizError", "NotProjectable", "notice", "first_line"]


class DeconvvizError(ValueError):
    """A user-facing error: its message is one line that says what was wrong.

    The command line prints it as ``Error: <message>`` and exits with status 1.
    """


class NotProjectable(DeconvvizError):
    """A layer that exists but that the deconvnet cannot go back from (an op on the way
    back has no rule, or the node gives no feature map): a refusal, not a usage mistake,
    so the command line answers it with one line and exit status 1."""


def notice(message: str) -> None:
    """Print a one-line notice (not an error) to standard error."""
    print(f"deconvviz: {message}", file=sys.stderr, flush=True)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name where it has none),
    for a one-line error in our own words that quotes what went wrong."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
