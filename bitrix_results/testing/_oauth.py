"""OAuth 2.0 tokens: issuing, expiry, rotation, and the token endpoint (api-facts §7).

On Bitrix24 the token endpoint lives on ``oauth.bitrix.info``; the fake serves it on
the same host at ``/oauth/token/`` so a test needs one server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._wire import JSON, expired_token, no_auth_found, v2_error
from .config import PortalConfig


@dataclass
class _Token:
    user_id: int
    expires_at: float


class TokenStore:
    """Access and refresh tokens. Refresh tokens are single-use (rotated on each grant)."""

    def __init__(self, seed: int) -> None:
        # Its own RNG, so issuing tokens never shifts the fault sequence.
        self._rng = random.Random(f"tokens:{seed}")
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}

    def new_secret(self) -> str:
        """160 random bits as hex, from the seeded RNG."""
        return f"{self._rng.getrandbits(160):040x}"

    def issue(self, user_id: int, now: float, config: PortalConfig) -> tuple[str, str, float]:
        """A new (access, refresh, access expiry) for ``user_id``."""
        access, refresh = self.new_secret(), self.new_secret()
        expires_at = now + config.effective_token_lifetime
        self._access[access] = _Token(user_id, expires_at)
        self._refresh[refresh] = _Token(user_id, now + config.effective_refresh_lifetime)
        return access, refresh, expires_at

    def user_of(self, access_token: str, now: float) -> int:
        """The token's user; 401 ``expired_token`` or ``NO_AUTH_FOUND`` otherwise."""
        token = self._access.get(access_token)
        if token is None:
            raise no_auth_found()
        # api-facts §7: an access token is valid for 1 hour (scaled), then 401 expired_token.
        if now >= token.expires_at:
            raise expired_token()
        return token.user_id

    def expire_access_tokens(self, now: float) -> None:
        for token in self._access.values():
            token.expires_at = min(token.expires_at, now)

    def redeem(self, refresh_token: str, now: float) -> int:
        """Consume a refresh token; its user, or ``invalid_grant`` if unknown/used/expired."""
        token = self._refresh.pop(refresh_token, None)
        if token is None or now >= token.expires_at:
            raise v2_error("invalid_grant", "Invalid refresh token", 400)
        return token.user_id


def token_endpoint(
    store: TokenStore,
    config: PortalConfig,
    params: dict[str, JSON],
    now: float,
    base_url: str,
) -> dict[str, JSON]:
    """``GET /oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token``.

    Returns the documented JSON (api-facts §7 table) or raises the OAuth server's errors.
    """
    grant_type = params.get("grant_type")
    refresh_token = params.get("refresh_token")
    client_id = params.get("client_id")
    client_secret = params.get("client_secret")
    # api-facts §7: "All four parameters are required."
    if not all(isinstance(v, str) and v for v in (grant_type, refresh_token, client_id)) or (
        not isinstance(client_secret, str) or not client_secret
    ):
        raise v2_error("invalid_request", "Missing required parameter", 400)
    if grant_type != "refresh_token":
        raise v2_error("invalid_request", "Unsupported grant_type", 400)
    if client_id != config.client_id or client_secret != config.client_secret:
        raise v2_error("invalid_client", "Invalid client credentials", 401)
    assert isinstance(refresh_token, str)
    user_id = store.redeem(refresh_token, now)
    access, refresh, expires_at = store.issue(user_id, now, config)
    lifetime = config.effective_token_lifetime
    integer = config.scale == 1
    base = base_url.rstrip("/")
    return {
        "access_token": access,
        "refresh_token": refresh,
        "expires": int(expires_at) if integer else expires_at,
        "expires_in": int(lifetime) if integer else lifetime,
        "client_endpoint": f"{base}/rest/",
        # The fake's OAuth server is the portal's own host (see the module docstring).
        "server_endpoint": f"{base}/oauth/rest/",
        "domain": base.split("://", 1)[-1],
        "member_id": config.member_id,
        "scope": "task,tasks",
        "status": "L",
        "user_id": user_id,
    }
