"""The aiohttp transport. Only `_transport/` imports the aiohttp client (here and auth.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp

from ..errors import (
    ConnectError,
    ConnectionLostError,
    ExpiredTokenError,
    InvalidInputError,
    RedirectRefusedError,
    RequestTimeoutError,
)
from .auth import Auth
from .codec import decode_reply, encode
from .types import Call, Reply
from .urls import check_origin, is_loopback, same_portal_family

__all__ = ["AiohttpTransport"]

logger = logging.getLogger("bitrix_results")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A domain change is one hop; more than a few is a loop, not a move (facts §7).
_MAX_REDIRECTS = 3
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class AiohttpTransport:
    """POSTs calls as JSON over one aiohttp session, created inside the running loop.

    ``timeout`` caps one HTTP exchange: a cloud portal cuts a request off after
    60 s (facts §1), so the default waits a little longer than that.
    """

    def __init__(
        self,
        auth: Auth,
        *,
        timeout: float = 65.0,
        connect_timeout: float = 10.0,
        max_connections: int = 32,
        follow_redirects_to: str | Iterable[str] = (),
    ) -> None:
        self._auth = auth
        self._endpoint = auth.endpoint
        # The bucket key: the portal's origin. Two portals on one host (a test
        # machine, an on-premise box) differ by port and have separate buckets.
        self._portal = urlsplit(auth.endpoint.origin).netloc
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._allowed_hosts = _hosts(follow_redirects_to)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def portal(self) -> str:
        return self._portal

    @property
    def credential(self) -> str:
        return self._auth.credential

    @property
    def auth(self) -> Auth:
        return self._auth

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            # Created lazily so it binds to the loop that actually runs the calls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                json_serialize=lambda v: encode(v).decode(),
            )
        return self._session

    async def send(self, call: Call) -> Reply:
        session = self._get_session()
        headers = dict(_JSON)
        if call.idempotency_key is not None and call.api == "v3":
            headers["Idempotency-Key"] = call.idempotency_key
        generation = self._auth.generation
        token = self._auth.body_token()
        params: dict[str, str] | None = None
        if token is None:
            payload = encode(call.params)
        elif isinstance(call.params, dict):
            payload = encode({**call.params, "auth": token})
        else:
            # A REST 3.0 batch body is a bare JSON array with no room for ``auth``.
            payload = encode(call.params)
            params = {"auth": token}
        for _ in range(_MAX_REDIRECTS + 1):
            url = self._endpoint.url(call.api, call.method)
            try:
                try:
                    async with session.post(
                        url, data=payload, headers=headers, params=params, allow_redirects=False
                    ) as resp:
                        status = resp.status
                        location = resp.headers.get("Location")
                        replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
                        body = await resp.read()
                except aiohttp.ClientError as exc:
                    # aiohttp puts the full URL (webhook code included) in some of
                    # its messages; our error chains to it, so scrub it first.
                    exc.args = _redact(exc.args, self._secrets())
                    raise
            except aiohttp.ConnectionTimeoutError as exc:
                raise ConnectError("timed out connecting", method=call.method) from exc
            except aiohttp.ClientConnectorError as exc:
                raise ConnectError("could not connect to the portal", method=call.method) from exc
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise RequestTimeoutError("no answer in time", method=call.method) from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                raise ConnectionLostError("connection lost", method=call.method) from exc
            except aiohttp.ClientPayloadError as exc:
                raise ConnectionLostError("response cut short", method=call.method) from exc
            except aiohttp.ClientError as exc:
                raise ConnectionLostError(type(exc).__name__, method=call.method) from exc
            logger.debug("bitrix_results: %s %s -> HTTP %s", call.api, call.method, status)
            if status in _REDIRECTS and location:
                self._follow(location, call.method)
                continue
            try:
                return decode_reply(body, status=status, method=call.method, replayed=replayed)
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

    def _secrets(self) -> tuple[str, ...]:
        found = (self._endpoint.code, self._auth.body_token())
        return tuple(secret for secret in found if secret)

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        await self._auth.refresh(self._get_session(), error)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


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


def _redact(args: tuple[object, ...], secrets: tuple[str, ...]) -> tuple[object, ...]:
    """Exception args with every secret replaced by ``***``."""

    def scrub(value: object) -> object:
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, "***")
        return value

    return tuple(scrub(arg) for arg in args)
