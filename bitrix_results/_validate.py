"""Input checks that run before anything is sent (SPEC §2.6).

Each raises :class:`~bitrix_results.errors.InvalidInputError` naming the field.
Bulk import runs the same checks per item so one bad item fails alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import InvalidInputError
from .models import NewResult

__all__ = ["choice", "key", "new_result", "non_negative_int", "positive_int", "text"]

# Idempotency keys: 1-255 printable ASCII characters (facts §4.1).
_KEY_MAX = 255
# Wrong string values are quoted in messages up to this many characters.
_SHOWN_MAX = 40


def _shown(value: object) -> str:
    """What a wrong value was, for a message: a string's repr (``'12a'``), else its type.

    Other values are named by type only: a large or secret-bearing object is not
    printed whole. Strings are cut short.
    """
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN_MAX else value[:_SHOWN_MAX] + "...")
    return type(value).__name__


def positive_int(field: str, value: object) -> int:
    # bool is an int subclass; True is not a task id.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, f"must be a positive int, got {_shown(value)}")
    if value <= 0:
        raise InvalidInputError(field, f"must be a positive int, got {value}")
    return value


def non_negative_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, f"must be an int >= 0, got {_shown(value)}")
    if value < 0:
        raise InvalidInputError(field, f"must be an int >= 0, got {value}")
    return value


def text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(field, "must not be empty or only whitespace")
    return value


def key(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= _KEY_MAX or not all(" " <= ch <= "~" for ch in value):
        raise InvalidInputError(field, f"must be 1-{_KEY_MAX} printable ASCII characters")
    return value


def choice(field: str, value: object, allowed: Mapping[str, str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise InvalidInputError(field, f"must be one of {options}, got {value!r}")
    return value


def new_result(value: object) -> NewResult:
    """An input item as a checked :class:`NewResult`: a NewResult or a (task_id, text) pair."""
    if isinstance(value, NewResult):
        item = value
    elif isinstance(value, tuple | list) and len(value) == 2:
        item = NewResult(value[0], value[1])
    else:
        raise InvalidInputError(
            "item", f"must be a NewResult or a (task_id, text) pair, got {type(value).__name__}"
        )
    positive_int("task_id", item.task_id)
    text("text", item.text)
    if item.key is not None:
        key("key", item.key)
    return item
