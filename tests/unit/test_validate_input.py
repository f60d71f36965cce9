"""The checks behind "refused before the wire" (design §2.6), one function at a time.

Each case here was accepted (or raised a raw exception) before: the client-level
tests in ``tests/client/test_validation_input.py`` show that nothing is sent.
"""

from __future__ import annotations

import datetime
import math
import uuid
from typing import Any

import msgspec
import pytest

from bitrix_results import InvalidInputError
from bitrix_results import _validate as check
from bitrix_results._transport.urls import METHOD_NAME, is_loopback, parse_portal, parse_webhook

# -- text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\ud800", id="lone-high"),
        pytest.param("Done \udc80 twice", id="lone-low-inside"),
        pytest.param("ok" * 100 + "\udfff", id="at-the-end"),
        pytest.param("Готово \ud83d", id="half-a-pair"),
    ],
)
def test_text_with_a_lone_surrogate_is_refused(value: str) -> None:
    # Before: accepted, then UnicodeEncodeError in the JSON encoder.
    with pytest.raises(InvalidInputError) as info:
        check.text("text", value)
    assert info.value.field == "text"
    assert "surrogate" in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\x00", id="nul"),
        pytest.param("\x00\x00\x00", id="nuls"),
        pytest.param("\x01\x07\x1b\x7f", id="controls"),
        pytest.param("\u200b", id="zero-width-space"),
        pytest.param("\u200b\u200c\u200d\u2060", id="zero-width-joiners"),
        pytest.param("\ufeff", id="bom"),
        pytest.param(" \ufeff\n\x00\u200b\t", id="mixed-with-whitespace"),
        pytest.param("\u00a0\u3000\u2028", id="other-blanks"),
        pytest.param("\u0085\u200e\u200f", id="nel-and-marks"),
    ],
)
def test_text_that_shows_nothing_is_refused_like_empty(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check.text("text", value)
    assert info.value.field == "text"
    assert "must not be empty" in info.value.message


@pytest.mark.parametrize(
    "value",
    ["Done", "Готово", "✓", "🎉", "\u200bDone", "a\x00", "Done\ufeff", "  x  ", "\u0301"],
)
def test_visible_text_is_kept_as_given(value: str) -> None:
    assert check.text("text", value) is value


# -- ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [check.positive_int, check.non_negative_int])
@pytest.mark.parametrize(
    "value",
    [2**63, 2**63 + 1, 2**64, 2**64 + 5, 10**30, 10**5000],
    ids=["2**63", "2**63+1", "2**64", "2**64+5", "10**30", "10**5000"],
)
def test_ids_of_2_63_and_above_are_refused(function: Any, value: int) -> None:
    with pytest.raises(InvalidInputError) as info:
        function("task_id", value)
    assert info.value.field == "task_id"
    assert "below 2**63" in info.value.message
    # A huge value is described, not printed (str() of it would itself raise).
    assert len(str(info.value)) < 100


@pytest.mark.parametrize("function", [check.positive_int, check.non_negative_int])
def test_the_largest_signed_64_bit_id_is_accepted(function: Any) -> None:
    assert function("task_id", 2**63 - 1) == 2**63 - 1


def test_a_huge_negative_id_is_described_not_printed() -> None:
    with pytest.raises(InvalidInputError) as info:
        check.non_negative_int("after_id", -(10**5000))
    assert "bits" in str(info.value)


# -- call() params ---------------------------------------------------------------------


class _Point(msgspec.Struct):
    x: int


@pytest.mark.parametrize(
    ("params", "where"),
    [
        pytest.param({"x": math.nan}, "['x']", id="nan"),
        pytest.param({"x": math.inf}, "['x']", id="inf"),
        pytest.param({"fields": {"n": [1, 2, -math.inf]}}, "['fields']['n'][2]", id="nested-inf"),
        pytest.param({"x": object()}, "['x']", id="object"),
        pytest.param({"x": {1, object()}}, "['x']", id="set-of-objects"),
        pytest.param({"x": b"\xff"}, "", id="bytes-ok-then-nan"),
        pytest.param({"x": "a\ud800"}, "['x']", id="surrogate-value"),
        pytest.param({"a\udc00": 1}, "", id="surrogate-key"),
        pytest.param({"x": {(1, 2): 3}}, "['x']", id="tuple-key"),
        pytest.param({"x": {None: 3}}, "['x']", id="none-key"),
    ],
)
def test_params_the_encoder_cannot_send_are_refused(params: dict[str, Any], where: str) -> None:
    if params.get("x") == b"\xff":
        # bytes encode (as base64): the check lets them through; a NaN next to them is caught.
        check.json_params("params", params)
        params = {"x": b"\xff", "y": math.nan}
        where = "['y']"
    with pytest.raises(InvalidInputError) as info:
        check.json_params("params", params)
    assert info.value.field == "params"
    if where:
        assert info.value.message.endswith(f"at {where}") or f"at {where}" in info.value.message


def test_params_nested_too_deep_or_containing_themselves_are_refused() -> None:
    deep: list[Any] = []
    current = deep
    for _ in range(1000):
        current.append([])
        current = current[0]
    with pytest.raises(InvalidInputError, match="nests deeper"):
        check.json_params("params", {"x": deep})
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(InvalidInputError, match="nests deeper"):
        check.json_params("params", looped)


def test_params_the_encoder_supports_are_accepted() -> None:
    params = {
        "filter": [["id", ">", 5], ["title", "=", "Готово"]],
        "order": {"id": "ASC"},
        "select": {0: "ID", 1: "TITLE"},
        "at": datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC),
        "uid": uuid.UUID(int=1),
        "point": _Point(3),
        "ratio": 0.5,
        "none": None,
        "flag": True,
    }
    check.json_params("params", params)
    msgspec.json.encode(params)  # and the encoder agrees


# -- method names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["tasks.task.get\n", "batch\n", "tasks.task.get\r\n", "\ntasks.task.get"]
)
def test_a_method_name_with_a_newline_is_refused(name: str) -> None:
    # Before: ``$`` matched before the trailing newline.
    assert METHOD_NAME.match(name) is None


@pytest.mark.parametrize("name", ["tasks.task.get", "batch", "tasks.task.result.addFromComment"])
def test_method_names_still_match(name: str) -> None:
    assert METHOD_NAME.match(name) is not None


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://portal.example:99999/rest/1/abc123/", id="port-99999"),
        pytest.param("https://portal.example:65536/rest/1/abc123/", id="port-65536"),
        pytest.param("https://portal.example:-1/rest/1/abc123/", id="port-negative"),
        pytest.param("https://portal.example:abc/rest/1/abc123/", id="port-abc"),
        pytest.param("https://portal.example:0/rest/1/abc123/", id="port-0"),
        pytest.param("http://[::1/rest/1/abc123/", id="broken-ipv6"),
        pytest.param("http://[::1]x/rest/1/abc123/", id="junk-after-ipv6"),
        pytest.param("https://por tal.example/rest/1/abc123/", id="space-in-host"),
        pytest.param("https://portal..example/rest/1/abc123/", id="empty-label"),
        pytest.param("http://anything.localhost/rest/1/abc123/", id="sub-localhost-http"),
        pytest.param("http://localhost.evil.example/rest/1/abc123/", id="localhost-prefix"),
        pytest.param("http://127.0.0.1.nip.io/rest/1/abc123/", id="loopback-looking-name"),
        pytest.param("http://10.0.0.1/rest/1/abc123/", id="private-ip"),
    ],
)
def test_bad_webhook_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_webhook(url)
    assert info.value.field == "webhook_url"
    assert "abc123" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example:8443/rest/1/abc123/",
        "https://портал.рф/rest/1/abc123/",
        "http://localhost/rest/1/abc123/",
        "http://LOCALHOST:8024/rest/1/abc123/",
        "http://127.0.0.1:65535/rest/1/abc123/",
        "http://127.1.2.3/rest/1/abc123/",
        "http://[::1]:8024/rest/1/abc123/",
        "https://anything.localhost/rest/1/abc123/",
        "https://10.0.0.1/rest/1/abc123/",
    ],
)
def test_good_webhook_urls_are_accepted(url: str) -> None:
    assert parse_webhook(url).code == "abc123"


@pytest.mark.parametrize(
    "portal",
    [
        pytest.param("https://x.bitrix24.com?x=1", id="query"),
        pytest.param("https://x.bitrix24.com/?x=1", id="query-after-slash"),
        pytest.param("https://x.bitrix24.com/rest?auth=1", id="query-after-rest"),
        pytest.param("https://x.bitrix24.com?", id="empty-query"),
        pytest.param("https://x.bitrix24.com#top", id="fragment"),
        pytest.param("x.bitrix24.com#", id="empty-fragment-bare"),
        pytest.param("ftp://x.bitrix24.com", id="ftp"),
        pytest.param("ws://x.bitrix24.com", id="ws"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("mailto:x@bitrix24.com", id="mailto"),
        pytest.param("x.bitrix24.com:99999", id="bad-port"),
        pytest.param("https://[::1", id="broken-ipv6"),
        pytest.param("http://x.localhost", id="sub-localhost-http"),
    ],
)
def test_bad_oauth_portals_are_refused_naming_the_field(portal: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_portal(portal)
    assert info.value.field == "portal"


@pytest.mark.parametrize(
    ("portal", "origin"),
    [
        ("x.bitrix24.com", "https://x.bitrix24.com"),
        ("https://x.bitrix24.com/", "https://x.bitrix24.com"),
        ("https://x.bitrix24.com/rest/", "https://x.bitrix24.com"),
        ("http://localhost:8024", "http://localhost:8024"),
    ],
)
def test_good_oauth_portals_are_accepted(portal: str, origin: str) -> None:
    assert parse_portal(portal).origin == origin


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("anything.localhost", False),
        ("localhost.", False),
        ("localhost.example", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("portal.example", False),
    ],
)
def test_loopback_is_only_literal_addresses_and_exactly_localhost(
    host: str, loopback: bool
) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**100])
def test_params_with_an_int_past_64_bits_are_refused(number: int) -> None:
    # The portal would read it as a rounded float: another id than the one meant.
    with pytest.raises(InvalidInputError, match=r"outside 64 bits.*at \['filter'\]\[0\]"):
        check.json_params("params", {"filter": [number]})
    check.json_params("params", {"filter": [2**63 - 1, -(2**63)]})
