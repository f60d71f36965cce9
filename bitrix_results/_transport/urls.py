"""The portal's URL forms, and the rules for which hosts we talk to.

Webhook: ``https://{portal}/rest/{user}/{code}/{method}`` for REST v2 and
``https://{portal}/rest/api/{user}/{code}/{method}`` for REST 3.0. OAuth:
``https://{portal}/rest/{method}`` and ``https://{portal}/rest/api/{method}``
with the token in the body (api-facts §4.1, §7).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import InvalidInputError
from .types import Api

__all__ = [
    "METHOD_NAME",
    "Endpoint",
    "check_origin",
    "is_loopback",
    "parse_portal",
    "parse_webhook",
]

# ``/rest/api/{user}/{code}/`` is the REST 3.0 form of the same webhook (the portal
# shows either); both name one user and code, so both parse to one Endpoint.
_WEBHOOK_PATH = re.compile(r"^/rest/(?:api/)?(?P<user>[1-9][0-9]*)/(?P<code>[A-Za-z0-9_-]+)/?$")
# A REST method name: dotted words (``tasks.task.result.add``), also ``batch``.
# ``\A`` and ``\Z``, not ``^`` and ``$``: ``$`` also matches before a trailing
# newline, which would let ``"tasks.task.get\n"`` through into the URL.
METHOD_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
# ``host``, ``host:port`` or ``[v6]:port``: urlsplit ignores junk after ``]``.
_HOST_PORT = re.compile(r"\A(\[[^\[\]]*\]|[^\[\]:]*)(:[0-9]*)?\Z")
# A host name after IDNA encoding: letters, digits, hyphens, underscores, dots.
_HOST_NAME = re.compile(r"\A[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")


def is_loopback(host: str) -> bool:
    """True for exactly ``localhost`` and literal loopback addresses (127.0.0.0/8, ::1).

    The only hosts plain HTTP may reach. Not ``*.localhost``: a resolver may send
    such a name to DNS, and so over the network (design §2.7).
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(field: str, url: str) -> tuple[str, str]:
    """Check scheme, host and port; return (origin, host). HTTPS unless loopback (design §2.7)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        # Reading .port checks it: a number in 0-65535 (ValueError otherwise).
        port = parts.port
    except ValueError:
        # A broken IPv6 literal or a port that is not a number. Not the URL in the
        # message: a webhook URL holds its code.
        raise InvalidInputError(
            field, "must be a valid URL (host, and a port from 1 to 65535)"
        ) from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(field, "must be an http(s) URL with a host")
    if port == 0:
        raise InvalidInputError(field, "must have a port from 1 to 65535")
    if not _HOST_PORT.match(parts.netloc.rpartition("@")[2]) or not _valid_host(host):
        raise InvalidInputError(field, "must have a valid host name")
    if parts.scheme == "http" and not is_loopback(host):
        raise InvalidInputError(field, "must use https (plain http only for loopback hosts)")
    if parts.username or parts.password:
        raise InvalidInputError(field, "must not carry a user name or password")
    return f"{parts.scheme}://{parts.netloc}", host


def _valid_host(host: str) -> bool:
    """A literal IP address, or a name that IDNA can encode into a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return _HOST_NAME.match(ascii_host) is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a credential's calls go. ``code`` is secret: it never reaches a repr."""

    origin: str
    host: str
    user_id: int | None = None
    code: str | None = None

    def url(self, api: Api, method: str) -> str:
        prefix = "/rest/api/" if api == "v3" else "/rest/"
        if self.code is not None:
            return f"{self.origin}{prefix}{self.user_id}/{self.code}/{method}"
        return f"{self.origin}{prefix}{method}"

    def moved_to(self, origin: str, host: str) -> Endpoint:
        return Endpoint(origin=origin, host=host, user_id=self.user_id, code=self.code)

    def __repr__(self) -> str:
        user = "" if self.user_id is None else f", user_id={self.user_id}"
        return f"Endpoint({self.origin!r}{user})"


def parse_webhook(url: str) -> Endpoint:
    """Split ``https://portal/rest/{user}/{code}/`` (or ``.../rest/api/{user}/{code}/``)
    into its parts, or refuse it."""
    if not isinstance(url, str):
        raise InvalidInputError("webhook_url", "must be a string")
    origin, host = _origin("webhook_url", url)
    parts = urlsplit(url)
    match = _WEBHOOK_PATH.match(parts.path)
    if match is None or parts.query or parts.fragment:
        # The message shows the expected form, never the URL given: it holds the code.
        raise InvalidInputError(
            "webhook_url", "must look like https://<portal>/rest/<user id>/<webhook code>/"
        )
    return Endpoint(origin=origin, host=host, user_id=int(match["user"]), code=match["code"])


def parse_portal(portal: str) -> Endpoint:
    """An OAuth portal address: ``https://portal.bitrix24.com`` or a bare host name."""
    if not isinstance(portal, str) or not portal.strip():
        raise InvalidInputError(
            "portal", "must be the portal's address, e.g. https://x.bitrix24.com"
        )
    if "://" not in portal:
        portal = "https://" + portal
    origin, host = _origin("portal", portal)
    parts = urlsplit(portal)
    if parts.path.rstrip("/") not in ("", "/rest"):
        raise InvalidInputError("portal", "must be the portal's address without a path")
    if parts.query or parts.fragment or "?" in portal or "#" in portal:
        # Dropping them silently would hide a pasted URL that is not the portal's.
        raise InvalidInputError("portal", "must be the portal's address without a query or #")
    return Endpoint(origin=origin, host=host)


def check_origin(field: str, url: str) -> tuple[str, str]:
    """Public form of the scheme/host check, for token endpoints and redirect targets."""
    return _origin(field, url)
