"""The client's keyword options: one typed dictionary, checked in one place.

Every client constructor (``ResultsClient(transport)``, ``from_webhook``,
``from_oauth`` and the blocking facade's twins) takes the same options, so they
are typed once (:class:`ClientOptions`, used through ``Unpack``) and checked
once, here: a misspelt name, a wrong type or value, and knobs that contradict
each other are refused before anything is built.
"""

from __future__ import annotations

import difflib
import math
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import TypedDict
from urllib.parse import urlsplit

from . import _validate as check
from ._scheduler import DEFAULT_HEADROOM, Limits, RetryPolicy, Scheduler
from ._transport import aiohttp_sender
from .errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMEOUT",
    "SCHEDULER_KNOBS",
    "SENDER_OPTIONS",
    "TRANSPORT_OPTIONS",
    "ClientOptions",
    "check_options",
    "scheduler_from",
]

#: Seconds for one HTTP exchange: a little over the 60 s the cloud portal lets one
#: request run before cutting it off (api-facts §1).
DEFAULT_TIMEOUT = 65.0
#: The largest answer read, raw or inflated: 32 MiB, far above any real page of
#: results. The sender's own default, so the two cannot drift apart.
DEFAULT_MAX_BODY_BYTES = aiohttp_sender.DEFAULT_MAX_BODY_BYTES

# Headers the client sets itself: auth, idempotency, the body's type and the
# encodings it can inflate under the body cap. ``headers=`` may not replace them.
_OWN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "content-encoding",
        "content-length",
        "content-type",
        "host",
        "idempotency-key",
        "proxy-authorization",
        "transfer-encoding",
    }
)
# RFC 9110 token characters: what a header name may hold.
_HEADER_NAME = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class ClientOptions(TypedDict, total=False):
    """The keyword options every client constructor takes; all are optional.

    Scheduler knobs (each has the default the scheduler would use):

    - ``limits``: the portal's plan, :class:`~bitrix_results.Limits`
      (default ``Limits.standard()``);
    - ``concurrency``: calls in flight at once (default: as many as the bucket
      admits at once, the burst less the headroom, at least 16 and at most 64:
      48 on a standard plan); the connection pool holds as many connections;
    - ``headroom``: requests of the burst the client leaves free, for other
      clients of the same webhook (default 2);
    - ``retry``: the :class:`~bitrix_results.RetryPolicy` (default
      ``RetryPolicy()``).

    Or ``scheduler``: a ready :class:`~bitrix_results.Scheduler` (to share one
    between clients, or to keep its state in Redis). It carries its own limits,
    concurrency, headroom and retry policy, so giving it together with any of
    the four knobs raises :class:`ValueError` rather than drop one silently.

    Transport (only for ``from_webhook`` and ``from_oauth``, which build it):

    - ``timeout``: seconds for one HTTP exchange (default 65);
    - ``follow_redirects_to``: a host, or hosts, a redirect may lead to
      (default none: redirects to another host are refused; never https to http);
    - ``max_body_bytes``: the largest answer read, raw or inflated (default
      32 MiB); a larger one raises :class:`~bitrix_results.ResponseTooLargeError`;
    - ``trust_env``: use ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the
      environment (default True, as in httpx);
    - ``proxy``: an ``http://`` proxy URL for every request (wins over the
      environment);
    - ``ssl``: an :class:`ssl.SSLContext` to verify the portal with (a private CA);
    - ``insecure_skip_tls_verify``: True turns certificate checks off (default
      False; for a test box only: anyone on the path can then read the webhook);
    - ``headers``: extra headers for every request; the client's own (auth,
      ``Idempotency-Key``, content type and encodings) cannot be replaced.

    Client: ``page_size``, the results per page :meth:`iter_results` asks for
    (default 50).

    A misspelt name raises ``TypeError`` (and is a mypy error); a wrong type or
    value raises `InvalidInputError` naming the option.

    Example:
        ```python
        client = ResultsClient.from_webhook(
            url, limits=Limits.enterprise(), concurrency=8, timeout=30, page_size=100
        )
        ```
    """

    limits: Limits | None
    scheduler: Scheduler | None
    concurrency: int | None
    headroom: int
    retry: RetryPolicy | None
    timeout: float
    follow_redirects_to: str | Iterable[str]
    max_body_bytes: int
    trust_env: bool
    proxy: str | None
    ssl: ssl.SSLContext | None
    insecure_skip_tls_verify: bool
    headers: Mapping[str, str]
    page_size: int


#: The options a ready scheduler already fixes.
SCHEDULER_KNOBS = ("limits", "concurrency", "headroom", "retry")
#: The options of the transport the client builds itself.
TRANSPORT_OPTIONS = (
    "timeout",
    "follow_redirects_to",
    "max_body_bytes",
    "trust_env",
    "proxy",
    "ssl",
    "insecure_skip_tls_verify",
    "headers",
)
#: The transport options that configure the built-in aiohttp sender: a sender
#: given with ``sender=`` keeps its own.
SENDER_OPTIONS = tuple(name for name in TRANSPORT_OPTIONS if name != "follow_redirects_to")


def check_options(options: Mapping[str, object], *, where: str) -> None:
    """Refuse unknown names, wrong values and contradicting knobs.

    ``where`` names the constructor for the unknown-name message, as Python
    names a function that got an unexpected keyword argument.
    """
    known = ClientOptions.__annotations__
    for name in options:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")
    _instance(options, "limits", Limits)
    _instance(options, "scheduler", Scheduler)
    _instance(options, "retry", RetryPolicy)
    if options.get("concurrency") is not None:  # None: the default
        check.positive_int("concurrency", options["concurrency"])
    if "headroom" in options:
        check.non_negative_int("headroom", options["headroom"])
    if "page_size" in options:
        check.positive_int("page_size", options["page_size"])
    if "timeout" in options:
        _seconds("timeout", options["timeout"])
    if "max_body_bytes" in options:
        check.positive_int("max_body_bytes", options["max_body_bytes"])
    for flag in ("trust_env", "insecure_skip_tls_verify"):
        if flag in options and not isinstance(options[flag], bool):
            raise InvalidInputError(
                flag, f"must be True or False, got {type(options[flag]).__name__}"
            )
    if options.get("proxy") is not None:
        _proxy(options["proxy"])
    _instance(options, "ssl", ssl.SSLContext)
    if options.get("ssl") is not None and options.get("insecure_skip_tls_verify"):
        raise InvalidInputError(
            "insecure_skip_tls_verify",
            "give either ssl (a context that verifies) or insecure_skip_tls_verify, not both",
        )
    if "headers" in options:
        _headers(options["headers"])
    if options.get("scheduler") is not None:
        given = [name for name in SCHEDULER_KNOBS if options.get(name) is not None]
        if given:
            raise InvalidInputError(
                "scheduler",
                f"give either scheduler or {', '.join(given)}, not both: a scheduler "
                "fixes its own limits, concurrency, headroom and retry policy",
            )


def scheduler_from(options: ClientOptions) -> Scheduler:
    """The scheduler the (checked) options ask for: the given one, or one built from the knobs."""
    given = options.get("scheduler")
    if given is not None:
        return given
    return Scheduler(
        options.get("limits") or Limits.standard(),
        concurrency=options.get("concurrency"),
        headroom=options.get("headroom", DEFAULT_HEADROOM),
        retry=options.get("retry"),
    )


def _instance(options: Mapping[str, object], field: str, kind: type) -> None:
    # None means "the default", as it always has for these three.
    value = options.get(field)
    if value is not None and not isinstance(value, kind):
        raise InvalidInputError(
            field, f"must be a {kind.__name__} or None, got {type(value).__name__}"
        )


def _seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field, f"must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(field, f"must be a positive, finite number of seconds, got {value}")
    return float(value)


def _proxy(value: object) -> str:
    """A proxy URL, http(s) with a host; never repeated in a message (it may hold a password)."""
    if not isinstance(value, str):
        raise InvalidInputError("proxy", f"must be a URL string, got {type(value).__name__}")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise InvalidInputError("proxy", "must be a valid URL with a host and port") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError("proxy", "must be an http:// or https:// URL with a host")
    return value


def _headers(value: object) -> dict[str, str]:
    """Extra headers: names and values as text, none the client sets itself."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            "headers", f"must be a mapping of names to values, got {type(value).__name__}"
        )
    checked: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidInputError("headers", f"{name!r} is not a valid header name")
        if name.lower() in _OWN_HEADERS:
            raise InvalidInputError(
                "headers", f"{name!r} is set by the client itself and cannot be replaced"
            )
        if not isinstance(text, str) or any(ch in text for ch in "\r\n\x00"):
            raise InvalidInputError("headers", f"the value of {name!r} must be text on one line")
        checked[name] = text
    return checked
