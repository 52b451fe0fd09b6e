"""The one error type for bad input.

`UserError` means "the user can fix this": a wrong flag, a missing file, a checkpoint of another model. The CLI
prints its first line after `error:` and exits with code 2, before anything is written. Every other exception is
a bug (or an environment failure the user cannot fix by changing their input): the CLI lets it show its
traceback and exit with code 1, and everything finished so far stays on disk.
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2


class UserError(ValueError):
    """Bad input: one line saying what is wrong and how to fix it.

    A subclass of ValueError so library callers that catch ValueError keep working; the CLI catches only this
    type, never a bare ValueError (which may come from deep inside torch and is a bug)."""
