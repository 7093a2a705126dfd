"""What every entry point (train, generate, evaluate, convert, torch_ref.train) shares.

Bad input is one line on stderr and exit status 2, never a traceback: each command raises
`UserError` (or a subclass: `data.DataError`, `checkpoint.CheckpointError`, ...) and `run`
prints it. A missing optional dependency (torch) is the same kind of line, naming the extra
to install. Kept free of heavy imports, so `--help` and bad flags answer at once.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from pathlib import Path

OPTIONAL = {"torch": "pip install -e '.[torch]'", "tensorflow": "pip install -e '.[tensorflow]'"}


class UserError(Exception):
    """Input the command cannot work with; the message is the whole one-line explanation."""


class UsageError(UserError):
    """Bad flags or arguments."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageError (one line, exit 2 through `run`)."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def run(prog: str, body: Callable[[], int | None]) -> int:
    """Call `body` and return the exit status: its own, 0, or 2 with one line for a user error,
    an OS error on a file, or a missing optional dependency; 130 on Ctrl-C."""
    try:
        return body() or 0
    except UserError as err:
        print(f"{prog}: error: {first_line(err)}", file=sys.stderr)
    except OSError as err:
        print(f"{prog}: error: {first_line(err)}", file=sys.stderr)
    except ModuleNotFoundError as err:
        return report_missing(prog, err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 2


def report_missing(prog: str, err: ModuleNotFoundError) -> int:
    """Print the one line naming the extra that installs an optional module, and return exit status 2;
    re-raise `err` when the missing module is not an optional dependency."""
    if err.name not in OPTIONAL:
        raise err
    print(f"{prog}: error: this needs {err.name}, which is not installed: {OPTIONAL[err.name]}", file=sys.stderr)
    return 2


def check_writable(path: str | Path, what: str) -> None:
    """UsageError unless a file can be written at `path`: its directory exists and takes new files,
    and `path` is not a directory nor a file this process may not write. Checked before the work
    that produces the file (a long training run) starts."""
    import os
    import tempfile

    path = Path(path)
    directory = path.parent
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory")
    if not directory.is_dir():
        raise UsageError(f"{what} {str(path)!r}: directory {str(directory)!r} does not exist")
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # opens for writing, changes nothing
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UsageError(f"{what} {str(path)!r} cannot be written: {err.strerror}") from None


def require(module: str) -> None:
    """ModuleNotFoundError (shown by `run` as the install command) unless `module` imports."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        hint = f": {OPTIONAL[module]}" if module in OPTIONAL else ""
        raise ModuleNotFoundError(f"No module named {module!r}{hint}", name=module)
