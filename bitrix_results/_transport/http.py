"""The REST transport: a :class:`Call` in, a :class:`Reply` or a typed error out.

It owns everything about the portal's HTTP: URL forms, where the credential goes
(path, body or query), redirects and decoding. The bytes go through an
:class:`HttpSender` (``wire.py``); this module imports no HTTP client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

from ..errors import (
    ExpiredTokenError,
    InvalidCredentialsError,
    InvalidInputError,
    RedirectRefusedError,
)
from .auth import Auth
from .codec import decode_reply, encode
from .scrub import secret_forms
from .types import Call, Reply
from .urls import check_origin
from .wire import HttpSender, RawRequest

__all__ = ["RestTransport"]

logger = logging.getLogger("bitrix_results")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A domain change is one hop; more than a few is a loop, not a move (api-facts §7).
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
        # The byte forms of the credential's secrets, to scrub from bodies; rebuilt
        # when a refresh changes them.
        self._scrub_key: tuple[str, ...] = ()
        self._scrub_forms: tuple[bytes, ...] = ()

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
        # What the sender must keep out of its errors and we out of server text.
        secrets = self._auth.secrets()
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
                    self._scrubbed(response.body, secrets),
                    status=status,
                    method=call.method,
                    replayed=replayed,
                    secrets=secrets,
                )
            except ExpiredTokenError as exc:
                exc.auth_generation = generation
                raise
            except InvalidCredentialsError as exc:
                if exc.code == "invalid_token" and self._auth.may_refresh_invalid(generation):
                    # b24jssdk refreshes on invalid_token too: a token the portal
                    # forgot (revoked sessions, a restored backup) may still have
                    # a good refresh token. Once: the scheduler refreshes (one
                    # refresh in flight) and repeats, and if the new token is
                    # refused as well the error stands.
                    raise _refreshable(exc, generation) from None
                raise
        raise RedirectRefusedError("too many redirects", method=call.method)

    def _scrubbed(self, body: bytes, secrets: tuple[str, ...]) -> bytes:
        """``body`` with every form of a secret replaced by ``***`` (design §2.7).

        The one place server text enters: everything decoded from a reply (error
        messages, validation details, a batch command's error) comes from here.
        A webhook code or token is never in a healthy answer, so this is a few
        substring searches per reply that find nothing.
        """
        if secrets != self._scrub_key:
            self._scrub_key = secrets
            self._scrub_forms = secret_forms(secrets)
        for form in self._scrub_forms:
            if form in body:
                body = body.replace(form, b"***")
        return body

    def _follow(self, location: str, method: str) -> None:
        """Accept a domain-change redirect (api-facts §7) only where credentials may go.

        The body is re-posted by hand (aiohttp would turn a 302 POST into a GET and
        drop the body), so the credentials go along: only to the same host or a
        host the user allow-listed (``follow_redirects_to``), never from https to
        http. Another ``*.bitrix24.<tld>`` host is another tenant, not this portal
        (design §2.7): it needs the allow-list like any other host.
        """
        try:
            target = urlsplit(location)
            scheme = target.scheme
        except ValueError:
            # ``http://[::1/``: a broken IPv6 literal. Not the Location in the
            # message: it may quote our URL, code included.
            raise RedirectRefusedError(
                "redirect to a malformed URL refused", method=method
            ) from None
        if not scheme:
            # A relative Location stays on the current host.
            return
        try:
            origin, host = check_origin("Location", location)
        except ValueError:
            raise RedirectRefusedError(
                "redirect to an insecure or malformed URL refused", method=method
            ) from None
        current = self._endpoint
        if current.origin.startswith("https:") and scheme.lower() != "https":
            raise RedirectRefusedError(
                "redirect from https to http refused: the credentials would travel in clear",
                method=method,
            )
        if host.lower() != current.host.lower() and host.lower() not in self._allowed_hosts:
            raise RedirectRefusedError(
                f"redirect to another host ({host}) refused; allow it with follow_redirects_to",
                method=method,
            )
        if origin != current.origin:
            logger.warning("bitrix_results: portal moved from %s to %s", current.host, host)
            self._endpoint = current.moved_to(origin, host)

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        await self._auth.refresh(self._sender, error)

    async def aclose(self) -> None:
        await self._sender.aclose()


def _refreshable(error: InvalidCredentialsError, generation: int) -> ExpiredTokenError:
    """``invalid_token`` as the error the scheduler refreshes on, once."""
    refresh = ExpiredTokenError(
        error.message, code=error.code, status=error.status, method=error.method
    )
    refresh.auth_generation = generation
    return refresh


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
