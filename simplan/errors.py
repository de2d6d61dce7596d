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


def load_json(text: str, label: str):
    """A JSON document the user wrote; a key given twice in one object, or malformed JSON, is
    a one-line SimplanError (``json`` would keep the last value silently)."""
    import json

    def unique(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        require(dup is None, f"{label}: duplicate key {dup!r} (each key once per mapping)")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as e:
        raise SimplanError(f"{label}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
