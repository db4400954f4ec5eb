"""One error convention for every entry point: an expected failure is one line on stderr, and the CLI exits 2."""

from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2  # argparse's own status for bad arguments; every musicgen-jax failure uses it


def one_line(error: BaseException | str, limit: int = 600) -> str:
    """The message of ``error`` on one line (whitespace collapsed, at most ``limit`` characters), or its type name."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (``PROG: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str):
        print(f"{self.prog}: error: {one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)
