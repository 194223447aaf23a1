"""User-facing errors: mistakes in input that entry points report as one line, not a traceback.

Library code raises a :class:`FadeError` (or a subclass) when the *user* got something wrong
(a bad config value, a missing file, an unknown concept). Entry scripts wrap their ``main`` with
:func:`run_cli`, which prints ``error: <message>`` to stderr and returns exit code 2. Bugs (any
other exception) still surface with a full traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERROR_EXIT_CODE = 2
#: The shell's code for a process stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130


class FadeError(Exception):
    """Base class for user mistakes (bad input); the message is shown to the user as one line."""


class ConfigError(FadeError):
    """A setting is unknown, mistyped or out of its allowed range."""


class Interrupted(FadeError):
    """The user stopped a run (Ctrl-C); the message says what was kept and how to go on."""


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "unknown error"


def run_cli(main: Callable[[], int | None]) -> int:
    """Run ``main``; turn a :class:`FadeError` into ``error: <msg>`` on stderr and exit code 2
    (an :class:`Interrupted` into ``interrupted: <msg>`` and 130; a Ctrl-C that no stage turned
    into one, say during an evaluation, into ``interrupted: stopped by Ctrl-C`` and 130: the
    user asked for it, so a traceback would only bury the prompt).

    Usage in an entry script: ``sys.exit(run_cli(main))``. Returns ``main``'s own return value
    (``None`` becomes 0).
    """
    try:
        code = main()
    except Interrupted as exc:
        print(f"interrupted: {_one_line(str(exc))}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted: stopped by Ctrl-C before it finished", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except FadeError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0 if code is None else int(code)


exit_on_user_error = run_cli
"""Alias of :func:`run_cli`."""
