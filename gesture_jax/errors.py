"""One base class for every error a user's files, data or config can cause.

The command-line tools (``train``, ``generate``, ``evaluate``, ``data_prep.prepare``,
``training.check``) print such an error as one line, ``error: MESSAGE``, naming the file and
the problem, and exit with status 2; ``--verbose`` adds the traceback. Anything else is a bug in
gesture_jax and keeps its traceback. Each module's own error class (ShardError,
CheckpointError, BVHError, ...) derives from :class:`UserError` *and* the builtin it always
was (ValueError, RuntimeError, ...), so existing ``except`` clauses keep working.
"""
from __future__ import annotations

import sys
import traceback

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Caused by the user's input (a file, a dataset, a checkpoint, a config): report, don't crash."""


def is_user_error(e: BaseException) -> bool:
    """UserError, or an OSError about a named file (missing, unreadable, disk full)."""
    return isinstance(e, UserError) or (isinstance(e, OSError) and getattr(e, "filename", None) is not None)


def one_line(e: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with ' | ')."""
    msg = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, UserError) and e.filename is not None:
        msg = f"{e.filename}: {e.strerror or msg}"
    return " | ".join(line.strip() for line in msg.splitlines() if line.strip())


def report(e: BaseException, verbose: bool = False) -> int:
    """Print ``error: MESSAGE`` (after the traceback when ``verbose``); returns the exit code."""
    if verbose:
        traceback.print_exception(e, file=sys.stderr)
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def verbose_requested(argv: list[str] | None = None) -> bool:
    """``--verbose`` on the command line (read directly: errors can come before flag parsing)."""
    argv = sys.argv if argv is None else argv
    return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv)


def define_verbose_flag() -> None:
    """``--verbose`` for an absl command (defined once however many CLI modules are imported)."""
    from absl import flags
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "print the full traceback of an error about your files or config")


def run_cli(fn, *args, **kwargs):
    """``fn(*args)``; a user error (see :func:`is_user_error`) becomes one line on stderr and
    ``SystemExit(2)``, with the traceback only under ``--verbose``. Other errors propagate."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - sorted by is_user_error below
        if not is_user_error(e):
            raise
        raise SystemExit(report(e, verbose_requested())) from None
