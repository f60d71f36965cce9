"""Credentials: a webhook, or OAuth tokens that refresh themselves on ``expired_token``.

Secrets (the webhook code, access and refresh tokens, the client secret) live
only in these objects and in the request they are put on; every repr hides them.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import aiohttp
import anyio
import msgspec

from ..errors import (
    ConnectError,
    ConnectionLostError,
    ExpiredTokenError,
    OAuthError,
    RequestTimeoutError,
    TransportError,
)
from ..models import OAuthTokens
from .urls import Endpoint

__all__ = ["Auth", "OAuthAuth", "TokenCallback", "WebhookAuth"]

logger = logging.getLogger("bitrix_results")

#: Called with the new tokens after every refresh, so the caller can store the
#: rotated refresh token (facts §7: "store it in place of the old one").
TokenCallback = Callable[[OAuthTokens], Awaitable[None] | None]

# The OAuth server (facts §7): client_secret is sent only here, never to the portal.
DEFAULT_TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"

_tokens_decoder = msgspec.json.Decoder(OAuthTokens)


class _OAuthErrorBody(msgspec.Struct):
    error: str = "unknown_error"
    error_description: str = ""


_oauth_error_decoder = msgspec.json.Decoder(_OAuthErrorBody)


def fingerprint(*secrets: str) -> str:
    """A short, non-reversible name for a credential (budget keys, statistics)."""
    digest = hashlib.sha256("\x00".join(secrets).encode()).hexdigest()
    return digest[:12]


class Auth:
    """Base: where calls go and what they carry."""

    endpoint: Endpoint
    #: Bumped on every refresh, so concurrent failures of one token refresh once.
    generation: int = 0

    @property
    def credential(self) -> str:
        raise NotImplementedError

    def body_token(self) -> str | None:
        """The token for the body's ``auth`` field, or None for webhooks."""
        return None

    async def refresh(self, session: aiohttp.ClientSession, error: ExpiredTokenError) -> None:
        raise error


class WebhookAuth(Auth):
    """An incoming webhook: the code is part of the URL and never expires."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._credential = fingerprint(endpoint.origin, str(endpoint.user_id), endpoint.code or "")

    @property
    def credential(self) -> str:
        return self._credential

    def __repr__(self) -> str:
        return f"WebhookAuth({self.endpoint.origin!r}, user_id={self.endpoint.user_id}, code=***)"


class OAuthAuth(Auth):
    """An OAuth application's tokens for one portal (facts §7).

    Refreshes only when the portal answers ``expired_token``; one refresh is in
    flight per credential however many calls fail together, because refresh
    tokens rotate and a second use of the old one would be refused.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        access_token: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        token_url: str = DEFAULT_TOKEN_URL,
        on_tokens: TokenCallback | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._access = access_token
        self._refresh = refresh_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._on_tokens = on_tokens
        self._lock = anyio.Lock()
        # Stable across refreshes: the budget belongs to the application on this portal.
        self._credential = fingerprint(endpoint.origin, client_id)
        self.refreshes = 0

    @property
    def credential(self) -> str:
        return self._credential

    def body_token(self) -> str | None:
        return self._access

    async def refresh(self, session: aiohttp.ClientSession, error: ExpiredTokenError) -> None:
        seen = error.auth_generation
        async with self._lock:
            if self.generation != seen:
                # Another call already refreshed while we waited: use its token.
                return
            params = {
                "grant_type": "refresh_token",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "refresh_token": self._refresh,
            }
            body, status = await self._get_tokens(session, params)
            if status != 200:
                err = _decode_oauth_error(body)
                raise OAuthError(err.error, err.error_description or f"HTTP {status}")
            try:
                tokens = _tokens_decoder.decode(body)
            except (msgspec.DecodeError, RecursionError) as exc:
                err = _decode_oauth_error(body)
                raise OAuthError(err.error, "the token endpoint sent no tokens") from exc
            self._access = tokens.access_token
            self._refresh = tokens.refresh_token
            self.generation += 1
            self.refreshes += 1
            logger.info("bitrix_results: refreshed OAuth tokens for %s", self.endpoint.host)
            if self._on_tokens is not None:
                outcome = self._on_tokens(tokens)
                if inspect.isawaitable(outcome):
                    await outcome

    async def _get_tokens(
        self, session: aiohttp.ClientSession, params: dict[str, str]
    ) -> tuple[bytes, int]:
        """GET the token endpoint; a failed exchange raises a secret-free TransportError.

        aiohttp puts the full URL in some of its messages (a connect timeout is
        "Connection timeout to host <url>"), and this URL's query carries the
        client secret and the refresh token. Our error names no URL, and the
        aiohttp error it chains to is scrubbed first (or dropped when scrubbing
        cannot clean it), so no traceback or log shows a secret.
        """
        try:
            async with session.get(self._token_url, params=params, allow_redirects=False) as resp:
                return await resp.read(), resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure: BaseException = exc
        # Raised outside the except block, so the unscrubbed error is not even
        # kept as the new error's __context__.
        raise _token_error(failure) from _scrubbed(failure, self._secrets())

    def _secrets(self) -> tuple[str, ...]:
        found = (self._client_secret, self._refresh, self._access)
        return tuple(secret for secret in found if secret)

    def __repr__(self) -> str:
        return f"OAuthAuth({self.endpoint.origin!r}, client_id={self._client_id!r}, tokens=***)"


# A secret query parameter of the token URL, up to the next parameter or quote.
_SECRET_PARAM = re.compile(r"""((?:client_secret|refresh_token|access_token|auth)=)[^&\s'"]*""")


def _token_error(exc: BaseException) -> TransportError:
    """The typed error for a failed token request; its message names no URL."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError("timed out connecting to the OAuth token endpoint")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError("could not connect to the OAuth token endpoint")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeoutError("no answer in time from the OAuth token endpoint")
    return ConnectionLostError(f"the OAuth token request failed ({type(exc).__name__})")


def _scrubbed(exc: BaseException, secrets: tuple[str, ...]) -> BaseException | None:
    """``exc`` with every secret in its args replaced by ``***``, or None if still leaky.

    A secret may appear as is or percent-encoded (it travelled in a URL query).
    Some exceptions build their text from attributes rather than args (an
    aiohttp ``ClientResponseError`` shows its request URL): when the text still
    shows a secret after scrubbing, the caller chains to nothing instead.
    """
    forms = sorted({form for secret in secrets for form in _encoded(secret)}, key=len, reverse=True)

    def scrub(value: object) -> object:
        if isinstance(value, str):
            # By name first, whatever the encoding (yarl keeps "/" but encodes "+").
            value = _SECRET_PARAM.sub(r"\1***", value)
            for form in forms:
                value = value.replace(form, "***")
        return value

    chain = _chain(exc)
    for link in chain:
        link.args = tuple(scrub(arg) for arg in link.args)
    for link in chain:
        try:
            texts = (str(link), repr(link))
        except Exception:  # a broken __str__: do not chain to it at all
            return None
        # Decoded too: a secret in an encoding not scrubbed above still shows.
        decoded = [form for text in texts for form in (text, unquote(text), unquote_plus(text))]
        if any(secret in text for text in decoded for secret in secrets):
            return None
    return exc


def _encoded(secret: str) -> tuple[str, ...]:
    """The forms ``secret`` takes in a URL: as is, and as the common encoders write it."""
    return (secret, quote(secret), quote(secret, safe=""), quote_plus(secret))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every error it chains to: what a traceback of it prints."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _decode_oauth_error(body: bytes) -> _OAuthErrorBody:
    try:
        return _oauth_error_decoder.decode(body)
    # RecursionError: a body nested thousands deep exhausts msgspec's stack.
    except (msgspec.DecodeError, RecursionError):
        return _OAuthErrorBody("invalid_response", "the token endpoint's answer is not JSON")
