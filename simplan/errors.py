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
