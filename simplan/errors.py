"""The one error type for user mistakes.

Anything the user typed that cannot be used raises :class:`SimplanError` with a
one-line message naming the field and the numbers. The CLI prints it and exits
with status 2. Any other exception is a bug and keeps its traceback.
"""


class SimplanError(ValueError):
    """A user mistake: bad scenario, profile, plan or option."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`SimplanError` with ``message`` unless ``condition`` holds.

    Used instead of ``assert`` because asserts vanish under ``python -O``.
    """
    if not condition:
        raise SimplanError(message)


def read_text(path, label: str, kind: str, encoding: str = "utf-8") -> str:
    """The text of a file the user named, or a one-line SimplanError saying why not
    (``kind`` names what the file should be, e.g. "scenario file")."""
    from pathlib import Path

    try:
        return Path(path).read_text(encoding=encoding)
    except FileNotFoundError:
        raise SimplanError(f"{label}: no such {kind}") from None
    except IsADirectoryError:
        raise SimplanError(f"{label}: is a directory, not a {kind}") from None
    except UnicodeDecodeError as e:
        raise SimplanError(f"{label}: not a text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SimplanError(f"{label}: cannot read ({e.strerror})") from None
