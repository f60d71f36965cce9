"""The wire: URL forms, body parsing and the exact bodies of both API versions.

Everything here is shape, not behaviour: which path means which API (api-facts §4.1), how
v2 parameters arrive (query, form or JSON, PHP-style ``a[b]=c`` keys), what a v2 and a
v3 error body look like (api-facts §4.2, §6), and the ``time`` object (api-facts §2.1).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec

from ._limits import BudgetReading

Api = Literal["v2", "v3"]
JSON = Any  # a decoded JSON value; the portal validates shapes by hand, like PHP does

_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()


def encode(value: JSON) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes) -> JSON:
    """Decode JSON; raises ``msgspec.DecodeError`` on anything else."""
    return _decoder.decode(data)


def fingerprint(value: JSON) -> bytes:
    """A canonical encoding: equal JSON values give equal bytes, whatever the key order."""
    return _sorted_encoder.encode(value)


# -- errors ---------------------------------------------------------------------------

V3_PREFIX = "BITRIX_REST_V3_EXCEPTION_"


class ApiError(Exception):
    """An error answer: HTTP status plus the exact JSON body to send."""

    def __init__(self, status: int, body: dict[str, JSON]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        error = self.body.get("error")
        if isinstance(error, dict):
            return str(error.get("code", ""))
        return str(error)


def v2_error(code: str, description: str, status: int = 400) -> ApiError:
    """api-facts §6: ``{"error": "<code>", "error_description": "<text>"}``."""
    return ApiError(status, {"error": code, "error_description": description})


def v3_error(
    code: str,
    message: str,
    *,
    status: int = 400,
    field: str | None = None,
    validation: bool = False,
) -> ApiError:
    """api-facts §4.2: ``{"error": {"code", "message", "validation"?}}``, no ``result``.

    ``code`` is the part after ``BITRIX_REST_V3_EXCEPTION_``. ``validation`` (or a
    ``field``) adds the ``validation`` list that validation errors carry.
    """
    error: dict[str, JSON] = {"code": V3_PREFIX + code, "message": message}
    if validation or field is not None:
        item: dict[str, JSON] = {"message": message}
        if field is not None:
            item = {"field": field, "message": message}
        error["validation"] = [item]
    return ApiError(status, {"error": error})


# api-facts §4.2 table and the method pages of api-facts §5; HTTP 400 unless noted.
REQUEST_VALIDATION = "VALIDATION_REQUESTVALIDATIONEXCEPTION"
DTO_VALIDATION = "VALIDATION_DTOVALIDATIONEXCEPTION"
REQUEST_FILTER_VALIDATION = "VALIDATION_REQUESTFILTERVALIDATIONEXCEPTION"
INVALID_JSON = "INVALIDJSONEXCEPTION"
UNKNOWN_DTO_PROPERTY = "UNKNOWNDTOPROPERTYEXCEPTION"
UNKNOWN_FILTER_OPERATOR = "UNKNOWNFILTEROPERATOREXCEPTION"
ENTITY_NOT_FOUND = "ENTITYNOTFOUNDEXCEPTION"  # api-facts §4.2: 400, not 404
ACCESS_DENIED = "ACCESSDENIEDEXCEPTION"  # 403
INVALID_FILTER = "INVALIDFILTEREXCEPTION"
INVALID_PAGINATION = "INVALIDPAGINATIONEXCEPTION"
INVALID_ORDER = "INVALIDORDEREXCEPTION"
INVALID_SELECT = "INVALIDSELECTEXCEPTION"
METHOD_NOT_FOUND = "METHODNOTFOUNDEXCEPTION"  # [SDK] b24jssdk; 404 like the v2 code
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCYKEYREUSEDEXCEPTION"  # api-facts §4.1: 422
INVALID_IDEMPOTENCY_KEY = "INVALIDIDEMPOTENCYKEYEXCEPTION"  # api-facts §4.1: 400


# System errors share the v2 body on both paths (api-facts §6, §1, §2.2, §7).
def query_limit_exceeded() -> ApiError:
    # api-facts §1: the observed body, b24-rest-docs #193.
    return v2_error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> ApiError:
    # api-facts §2.2 / §6: 429, and no ``time`` block (the client must keep the last one).
    return v2_error("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)


def no_auth_found() -> ApiError:
    return v2_error("NO_AUTH_FOUND", "Wrong authorization data", 401)


def expired_token() -> ApiError:
    return v2_error("expired_token", "The access token provided has expired.", 401)


def internal_server_error() -> ApiError:
    return v2_error("INTERNAL_SERVER_ERROR", "Internal server error", 500)


def method_not_found(api: Api) -> ApiError:
    # api-facts §4.1: a v3-only method under /rest/ is ERROR_METHOD_NOT_FOUND, HTTP 404.
    if api == "v3":
        return v3_error(METHOD_NOT_FOUND, "Method not found", status=404)
    return v2_error("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


HTML_503 = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><center><h1>503 Service Temporarily Unavailable</h1></center>"
    b"<hr><center>nginx</center></body></html>\n"
)


# -- URL forms (api-facts §4.1) -----------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a /rest path names: API version, method, and the webhook part if any."""

    api: Api
    method: str  # lower case: Bitrix method names are case-insensitive
    webhook_user: int | None = None
    webhook_code: str | None = None


def parse_route(path: str) -> Route | None:
    """``/rest[/api][/{user}/{code}]/{method}``; None for anything else.

    The optional ``.json`` suffix picks the (default) JSON format of old methods only.
    """
    if not path.startswith("/rest/"):
        return None
    parts = [p for p in path[len("/rest/") :].split("/") if p]
    api: Api = "v2"
    if parts[:1] == ["api"]:
        api, parts = "v3", parts[1:]
    if len(parts) == 1:
        user, code, method = None, None, parts[0]
    elif len(parts) == 3 and parts[0].isdigit():
        user, code, method = int(parts[0]), parts[1], parts[2]
    else:
        return None
    method = method.lower()
    if api == "v2" and method.endswith(".json"):
        method = method[: -len(".json")]
    if not method:
        return None
    return Route(api, method, user, code)


# -- v2 parameters --------------------------------------------------------------------

_KEY = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")


def parse_php_query(query: str) -> dict[str, JSON]:
    """Parse a query string the way PHP does: ``fields[taskId]=1&ids[]=2&ids[]=3``.

    api-facts §3.1: v2 batch commands are ``"method?param=value&..."`` strings, and v2
    parameters may also arrive as a query string or a form body.
    """
    params: dict[str, JSON] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        names = [
            m.group(1) if m.group(1) is not None else m.group(2) for m in _KEY.finditer(raw_key)
        ]
        if not names or not names[0]:
            continue
        _insert(params, names, value)
    return params


def _insert(container: dict[str, JSON] | list[JSON], names: list[str], value: str) -> None:
    head, rest = names[0], names[1:]
    if not rest:
        if isinstance(container, list):
            container.append(value)
        else:
            container[head] = value
        return
    child: dict[str, JSON] | list[JSON]
    if isinstance(container, list):
        child = [] if rest[0] == "" else {}
        container.append(child)
    else:
        existing = container.get(head)
        if isinstance(existing, dict | list):
            child = existing
        else:
            child = [] if rest[0] == "" else {}
            container[head] = child
    _insert(child, rest, value)


def as_v2_int(value: JSON) -> int | None:
    """v2 parameters come as JSON numbers or strings from a query: accept both."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def as_v3_int(value: JSON) -> int | None:
    """v3 is typed JSON: only a JSON integer is an int (``true`` is not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


# -- the ``time`` object (api-facts §2.1) -------------------------------------------------


def iso(timestamp: float, utc_offset_hours: float) -> str:
    """ISO-8601 with offset, as Bitrix24 dates are: ``2026-08-21T12:00:00+03:00``."""
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    return dt.datetime.fromtimestamp(timestamp, tz).isoformat(timespec="seconds")


def time_block(
    *,
    start: float,
    cost: float,
    reading: BudgetReading | None,
    integer_reset: bool,
    utc_offset_hours: float,
) -> dict[str, JSON]:
    """The ``time`` object of a success; ``reading`` None omits the operating counters.

    ``operating_reset_at`` is an int on a real portal (api-facts §2.1); a time-compressed
    portal keeps the fraction, since rounding would move it by up to a whole scaled
    second. Rounding is *up*: at that instant the oldest basket has surely expired.
    """
    finish = start + cost
    block: dict[str, JSON] = {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": cost,
        "date_start": iso(start, utc_offset_hours),
        "date_finish": iso(finish, utc_offset_hours),
    }
    if reading is not None:
        reset_at: float | int | None = reading.reset_at
        if reset_at is not None and integer_reset:
            reset_at = math.ceil(reset_at)
        block["operating_reset_at"] = reset_at if reset_at is not None else math.ceil(start)
        block["operating"] = reading.operating
    return block
