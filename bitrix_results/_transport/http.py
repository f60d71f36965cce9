"""The REST transport: a :class:`Call` in, a :class:`Reply` or a typed error out.

It owns everything about the portal's HTTP: URL forms, where the credential goes
(path, body or query), redirects and decoding. The bytes go through an
:class:`HttpSender` (``wire.py``); this module imports no HTTP client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

from ..errors import ExpiredTokenError, InvalidInputError, RedirectRefusedError
from .auth import Auth
from .codec import decode_reply, encode
from .types import Call, Reply
from .urls import check_origin, is_loopback, same_portal_family
from .wire import HttpSender, RawRequest

__all__ = ["RestTransport"]

logger = logging.getLogger("bitrix_results")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A domain change is one hop; more than a few is a loop, not a move (facts §7).
_MAX_REDIRECTS = 3
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class RestTransport:
    """POSTs calls as JSON through ``sender``, which it owns: closing the transport closes it."""

    def __init__(
        self,
        auth: Auth,
        sender: HttpSender,
        *,
        follow_redirects_to: str | Iterable[str] = (),
    ) -> None:
        self._auth = auth
        self._sender = sender
        self._endpoint = auth.endpoint
        # The bucket key: the portal's origin. Two portals on one host (a test
        # machine, an on-premise box) differ by port and have separate buckets.
        self._portal = urlsplit(auth.endpoint.origin).netloc
        self._allowed_hosts = _hosts(follow_redirects_to)
        # What the sender must keep out of its errors; the token is added per call
        # because a refresh replaces it.
        code = auth.endpoint.code
        self._secrets: tuple[str, ...] = (code,) if code else ()

    @property
    def portal(self) -> str:
        return self._portal

    @property
    def credential(self) -> str:
        return self._auth.credential

    @property
    def auth(self) -> Auth:
        return self._auth

    @property
    def sender(self) -> HttpSender:
        return self._sender

    async def send(self, call: Call) -> Reply:
        headers = _JSON
        if call.idempotency_key is not None and call.api == "v3":
            headers = {**_JSON, "Idempotency-Key": call.idempotency_key}
        generation = self._auth.generation
        token = self._auth.body_token()
        query = ""
        if token is None:
            payload = encode(call.params)
        elif isinstance(call.params, dict):
            payload = encode({**call.params, "auth": token})
        else:
            # A REST 3.0 batch body is a bare JSON array with no room for ``auth``.
            payload = encode(call.params)
            query = "?auth=" + quote(token, safe="")
        secrets = self._secrets if token is None else (*self._secrets, token)
        for _ in range(_MAX_REDIRECTS + 1):
            request = RawRequest(
                "POST",
                self._endpoint.url(call.api, call.method) + query,
                headers,
                payload,
                call.method,
                secrets,
            )
            response = await self._sender.send(request)
            status = response.status
            logger.debug("bitrix_results: %s %s -> HTTP %s", call.api, call.method, status)
            if status in _REDIRECTS:
                location = response.headers.get("location")
                if location:
                    self._follow(location, call.method)
                    continue
            replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
            try:
                return decode_reply(
                    response.body, status=status, method=call.method, replayed=replayed
                )
            except ExpiredTokenError as exc:
                exc.auth_generation = generation
                raise
        raise RedirectRefusedError("too many redirects", method=call.method)

    def _follow(self, location: str, method: str) -> None:
        """Accept a domain-change redirect (facts §7) only to a host we may follow.

        The body is re-posted by hand (aiohttp would turn a 302 POST into a GET and
        drop the body); credentials go only to the same portal family or a host
        the user allowed, never to an arbitrary Location.
        """
        target = urlsplit(location)
        if not target.scheme:
            # A relative Location stays on the current host.
            return
        try:
            origin, host = check_origin("Location", location)
        except ValueError as exc:
            raise RedirectRefusedError(
                "redirect to an insecure URL refused", method=method
            ) from exc
        current = self._endpoint.host
        if not (
            same_portal_family(current, host)
            or host.lower() in self._allowed_hosts
            or (is_loopback(current) and is_loopback(host))
        ):
            raise RedirectRefusedError(
                f"redirect to another host ({host}) refused; allow it with follow_redirects_to",
                method=method,
            )
        if origin != self._endpoint.origin:
            logger.warning("bitrix_results: portal moved from %s to %s", current, host)
            self._endpoint = self._endpoint.moved_to(origin, host)

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        await self._auth.refresh(self._sender, error)

    async def aclose(self) -> None:
        await self._sender.aclose()


def _hosts(follow_redirects_to: str | Iterable[str]) -> frozenset[str]:
    """The hosts a redirect may go to; one string is one host, not its characters."""
    if isinstance(follow_redirects_to, str):
        hosts: Iterable[object] = [follow_redirects_to]
    elif isinstance(follow_redirects_to, Iterable):
        hosts = follow_redirects_to
    else:
        raise InvalidInputError(
            "follow_redirects_to",
            f"must be a host name or host names, got {type(follow_redirects_to).__name__}",
        )
    allowed: set[str] = set()
    for host in hosts:
        if not isinstance(host, str) or not host.strip():
            shown = repr(host) if isinstance(host, str) else type(host).__name__
            raise InvalidInputError("follow_redirects_to", f"must be host names, got {shown}")
        name = host.strip()
        if "://" in name:  # a URL was given: its host is meant
            name = urlsplit(name).hostname or ""
        if not name:
            raise InvalidInputError("follow_redirects_to", f"must be host names, got {host!r}")
        allowed.add(name.lower())
    return frozenset(allowed)
