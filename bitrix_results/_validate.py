"""Input checks that run before anything is sent (design §2.6).

Each raises :class:`~bitrix_results.errors.InvalidInputError` naming the field.
Bulk import runs the same checks per item so one bad item fails alone.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping

import msgspec

from .errors import InvalidInputError
from .models import NewResult

__all__ = [
    "ID_LIMIT",
    "choice",
    "json_params",
    "key",
    "new_result",
    "non_negative_int",
    "positive_int",
    "text",
]

# Idempotency keys: 1-255 printable ASCII characters (api-facts §4.1).
_KEY_MAX = 255
#: Ids and counts must stay below this: the portal stores ids as signed 64-bit
#: integers, and so does a bulk job's journal (SQLite INTEGER). A larger value
#: could only fail on the portal, or silently wrap, after it was sent.
ID_LIMIT = 2**63
# Characters that show nothing: controls and NUL (Cc), format characters such as
# zero-width spaces, joiners and the BOM (Cf), separators (Z*). Text made only of
# these and whitespace reads as empty on the portal.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_category = unicodedata.category
# call() params nest no deeper than this: real REST params are a few levels deep,
# and a deeper (or self-referencing) structure would exhaust the stack in the encoder.
_PARAMS_DEPTH = 64
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
    if value >= ID_LIMIT:
        raise InvalidInputError(field, f"must be below 2**63, got {_big(value)}")
    return value


def non_negative_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, f"must be an int >= 0, got {_shown(value)}")
    if value < 0:
        raise InvalidInputError(field, f"must be an int >= 0, got {_big(value)}")
    if value >= ID_LIMIT:
        raise InvalidInputError(field, f"must be below 2**63, got {_big(value)}")
    return value


def _big(value: int) -> str:
    # str() of an int over 4300 digits raises ValueError (CPython's int/str limit),
    # and a huge number helps no one read the message.
    return str(value) if abs(value) < 10**30 else f"an int of {value.bit_length()} bits"


def text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    if value.isprintable():
        # The common case, checked in C: "printable" excludes surrogates and every
        # control, format and separator character except the ASCII space, so any
        # other character shows.
        if not value.strip(" "):
            raise InvalidInputError(field, _BLANK)
        return value
    if not value.isascii():
        # A lone surrogate (from a bad decode, or surrogateescape) cannot be sent
        # as UTF-8: refuse it here rather than fail in the encoder.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                field, f"holds a lone surrogate {value[exc.start]!r} at position {exc.start}"
            ) from None
    for ch in value:
        if not ch.isspace() and _category(ch) not in _INVISIBLE:
            return value
    raise InvalidInputError(field, _BLANK)


_BLANK = "must not be empty or only whitespace, control or invisible characters"


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


def json_params(field: str, value: object) -> None:
    """Refuse what the JSON encoder would fail on or send wrong, naming where it is.

    Non-finite floats (the encoder would send ``null``), lone surrogates, keys
    that are neither strings nor ints, objects the encoder does not know, and
    nesting deeper than any REST method takes (or a structure that contains
    itself). Other types the encoder supports (datetime, UUID, Struct...) are
    accepted as before.
    """
    _json_value(field, value, "", 0)


def _json_value(field: str, value: object, path: str, depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    where = f" at {path}" if path else ""
    if isinstance(value, int):
        # The portal reads JSON numbers into 64-bit integers (PHP): a larger one
        # would arrive as a rounded float, a different id than the one meant.
        if not -(2**63) <= value < 2**63:
            raise InvalidInputError(field, f"holds an int outside 64 bits ({_big(value)}){where}")
        return
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    field, f"holds a lone surrogate{where} (position {exc.start})"
                ) from None
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(field, f"must hold finite numbers, got {value}{where}")
        return
    if depth >= _PARAMS_DEPTH:
        raise InvalidInputError(field, f"nests deeper than {_PARAMS_DEPTH} levels{where}")
    if isinstance(value, dict):
        for name, item in value.items():
            if isinstance(name, str):
                _json_value(field, name, path, depth)
            elif isinstance(name, bool) or not isinstance(name, int):
                raise InvalidInputError(
                    field, f"keys must be strings or ints, got {type(name).__name__}{where}"
                )
            step = _shown(name) if isinstance(name, str) else _big(name)
            _json_value(field, item, f"{path}[{step}]", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _json_value(field, item, f"{path}[{index}]", depth + 1)
        return
    # Anything else is left to the encoder, tried here so its failure names the field.
    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise InvalidInputError(
            field, f"must hold only JSON values, got {type(value).__name__}{where}"
        ) from None
