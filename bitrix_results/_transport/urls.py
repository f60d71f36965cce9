"""The portal's URL forms, and the rules for which hosts we talk to.

Webhook: ``https://{portal}/rest/{user}/{code}/{method}`` for REST v2 and
``https://{portal}/rest/api/{user}/{code}/{method}`` for REST 3.0. OAuth:
``https://{portal}/rest/{method}`` and ``https://{portal}/rest/api/{method}``
with the token in the body (facts §4.1, §7).
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
    "same_portal_family",
]

_WEBHOOK_PATH = re.compile(r"^/rest/(?P<user>[1-9][0-9]*)/(?P<code>[A-Za-z0-9_-]+)/?$")
# A REST method name: dotted words (``tasks.task.result.add``), also ``batch``.
METHOD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback ranges: the only hosts plain HTTP may reach."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(field: str, url: str) -> tuple[str, str]:
    """Check scheme and host; return (origin, host). HTTPS unless loopback (SPEC §2.7)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(field, "must be an http(s) URL with a host")
    if parts.scheme == "http" and not is_loopback(host):
        raise InvalidInputError(field, "must use https (plain http only for loopback hosts)")
    if parts.username or parts.password:
        raise InvalidInputError(field, "must not carry a user name or password")
    return f"{parts.scheme}://{parts.netloc}", host


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
    """Split ``https://portal/rest/{user}/{code}/`` into its parts, or refuse it."""
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
    path = urlsplit(portal).path.rstrip("/")
    if path not in ("", "/rest"):
        raise InvalidInputError("portal", "must be the portal's address without a path")
    return Endpoint(origin=origin, host=host)


def check_origin(field: str, url: str) -> tuple[str, str]:
    """Public form of the scheme/host check, for token endpoints and redirect targets."""
    return _origin(field, url)


def same_portal_family(old: str, new: str) -> bool:
    """Whether a domain-change redirect from ``old`` to ``new`` stays with the portal.

    The same host, or two hosts under one Bitrix24 cloud domain (both
    ``*.bitrix24.<tld>``): a portal renamed within the cloud (facts §7, "Domain
    change"). Anything else needs the user's allow-list.
    """
    if old == new:
        return True
    old_tail, new_tail = old.split(".")[-2:], new.split(".")[-2:]
    return (
        len(old_tail) == 2
        and old_tail == new_tail
        and old_tail[0].startswith("bitrix24")
        and new.count(".") >= 2
    )
