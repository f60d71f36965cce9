"""The one scrubber (``_transport/scrub.py``): text copies of error chains, and server text."""

from __future__ import annotations

import traceback

from bitrix_results._transport.scrub import (
    ScrubbedError,
    scrub_text,
    scrubbed_copy,
    secret_forms,
)

SECRET = "s3cr/et+value"
SECRETS = (SECRET,)


class _Holder(Exception):
    """An error whose text is clean but whose attribute holds the secret (as aiohttp's do)."""

    def __init__(self) -> None:
        super().__init__("clean text")
        self.url = f"https://p.example/rest/1/{SECRET}/x"


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _everything(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current), repr(vars(current)), repr(current.args)]
        current = current.__cause__
    return "\n".join(parts)


def test_the_copy_keeps_type_and_scrubbed_text_but_no_attribute() -> None:
    inner = ValueError(f"bad url https://p.example/rest/1/{SECRET}/x")
    outer = _Holder()
    outer.__cause__ = inner
    copy = scrubbed_copy(outer, SECRETS)
    assert isinstance(copy, ScrubbedError)
    assert copy.type_name.endswith("_Holder")
    assert isinstance(copy.__cause__, ScrubbedError)
    assert "bad url https://p.example/rest/1/***/x" in str(copy.__cause__)
    assert SECRET not in _everything(copy)
    assert copy.__traceback__ is None


def test_a_cycle_and_a_broken_str_are_survived() -> None:
    first, second = _BrokenStr(), ValueError("v")
    first.__context__ = second
    second.__context__ = first
    copy = scrubbed_copy(first, SECRETS)
    assert copy.type_name.endswith("_BrokenStr")
    assert str(copy.__cause__).endswith("ValueError: v")


def test_a_secret_in_an_encoding_not_replaced_withholds_the_message() -> None:
    # Encoded with a lower-case escape: not one of the forms replaced, still readable.
    text = "url " + SECRET.replace("/", "%2f").replace("+", "%2b")
    copy = scrubbed_copy(ValueError(text), SECRETS)
    assert "withheld" in str(copy)


def test_secret_parameters_are_scrubbed_by_name_even_when_unknown() -> None:
    text = 'GET /oauth/token/?client_secret=abc&refresh_token=def&x=1 {"access_token": "ghi"}'
    cleaned = scrub_text(text, ())
    for value in ("abc", "def", "ghi"):
        assert value not in cleaned
    assert "x=1" in cleaned


def test_body_forms_include_the_json_escaped_slash() -> None:
    forms = secret_forms(SECRETS)
    assert b"s3cr\\/et+value" in forms
    assert b"s3cr%2Fet%2Bvalue" in forms
