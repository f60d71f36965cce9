"""Credentials: a webhook, or OAuth tokens that refresh themselves on ``expired_token``.

Secrets (the webhook code, access and refresh tokens, the client secret) live
only in these objects and in the request they are put on; every repr hides them.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import anyio
import msgspec

from ..errors import ExpiredTokenError, OAuthError
from ..models import OAuthTokens
from .scrub import scrub_text
from .urls import Endpoint
from .wire import HttpSender, RawRequest

__all__ = ["Auth", "OAuthAuth", "TokenCallback", "WebhookAuth"]

logger = logging.getLogger("bitrix_results")

#: Called with the new tokens after every refresh, so the caller can store the
#: rotated refresh token (api-facts §7: "store it in place of the old one").
TokenCallback = Callable[[OAuthTokens], Awaitable[None] | None]

# The OAuth server (api-facts §7): client_secret is sent only here, never to the portal.
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

    def secrets(self) -> tuple[str, ...]:
        """Every secret this credential holds now: what no error or log may show."""
        code = self.endpoint.code
        return (code,) if code else ()

    def may_refresh_invalid(self, generation: int) -> bool:
        """Whether a 401 ``invalid_token`` for the token of ``generation`` earns a refresh.

        Only OAuth tokens refresh, and only once: not when the refused token is
        itself the fruit of a refresh that an ``invalid_token`` caused.
        """
        return False

    async def refresh(self, sender: HttpSender, error: ExpiredTokenError) -> None:
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
    """An OAuth application's tokens for one portal (api-facts §7).

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
        # The generation a refresh made because the portal said invalid_token:
        # if that token is refused as invalid too, no refresh will help.
        self._invalid_refreshed: int | None = None
        self._retired: tuple[str, ...] = ()

    @property
    def credential(self) -> str:
        return self._credential

    def body_token(self) -> str | None:
        return self._access

    def secrets(self) -> tuple[str, ...]:
        return self._secrets()

    def may_refresh_invalid(self, generation: int) -> bool:
        return generation != self._invalid_refreshed

    async def refresh(self, sender: HttpSender, error: ExpiredTokenError) -> None:
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
            body, status = await self._get_tokens(sender, params)
            secrets = self._secrets()
            if status != 200:
                err = _decode_oauth_error(body)
                # Server text, scrubbed: a token endpoint may echo the query it
                # got, client_secret and refresh_token included (design §2.7).
                raise OAuthError(
                    scrub_text(err.error, secrets),
                    scrub_text(err.error_description, secrets) or f"HTTP {status}",
                )
            try:
                tokens = _tokens_decoder.decode(body)
            except (msgspec.DecodeError, RecursionError):
                err = _decode_oauth_error(body)
                # Not chained: msgspec's error may quote the body.
                raise OAuthError(
                    scrub_text(err.error, secrets), "the token endpoint sent no tokens"
                ) from None
            # The tokens just replaced stay secret: a late error may still quote them.
            self._retired = (self._access, self._refresh)
            self._access = tokens.access_token
            self._refresh = tokens.refresh_token
            self.generation += 1
            self.refreshes += 1
            if error.code == "invalid_token":
                self._invalid_refreshed = self.generation
            logger.info("bitrix_results: refreshed OAuth tokens for %s", self.endpoint.host)
            if self._on_tokens is not None:
                outcome = self._on_tokens(tokens)
                if inspect.isawaitable(outcome):
                    await outcome

    async def _get_tokens(self, sender: HttpSender, params: dict[str, str]) -> tuple[bytes, int]:
        """GET the token endpoint through the client's sender.

        The query carries the client secret and the refresh token; the sender
        keeps them out of any error it raises (``secrets``), as for REST calls.
        """
        glue = "&" if "?" in self._token_url else "?"
        request = RawRequest(
            "GET",
            self._token_url + glue + urlencode(params),
            secrets=self._secrets(),
        )
        response = await sender.send(request)
        return response.body, response.status

    def _secrets(self) -> tuple[str, ...]:
        found = (self._client_secret, self._refresh, self._access, *self._retired)
        return tuple(secret for secret in found if secret)

    def __repr__(self) -> str:
        return f"OAuthAuth({self.endpoint.origin!r}, client_id={self._client_id!r}, tokens=***)"


def _decode_oauth_error(body: bytes) -> _OAuthErrorBody:
    try:
        return _oauth_error_decoder.decode(body)
    # RecursionError: a body nested thousands deep exhausts msgspec's stack.
    except (msgspec.DecodeError, RecursionError):
        return _OAuthErrorBody("invalid_response", "the token endpoint's answer is not JSON")
