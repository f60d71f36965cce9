"""Everything that touches the wire: URL forms, auth, codec and the aiohttp transport."""

from .auth import Auth, OAuthAuth, TokenCallback, WebhookAuth
from .http import AiohttpTransport
from .types import Api, Call, Reply, RetryClass, Transport

__all__ = [
    "AiohttpTransport",
    "Api",
    "Auth",
    "Call",
    "OAuthAuth",
    "Reply",
    "RetryClass",
    "TokenCallback",
    "Transport",
    "WebhookAuth",
]
