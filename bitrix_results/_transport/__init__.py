"""Everything that touches the wire: URL forms, auth, codec, the REST transport and its senders."""

from .aiohttp_sender import AiohttpSender
from .auth import Auth, OAuthAuth, TokenCallback, WebhookAuth
from .http import RestTransport
from .types import Api, Call, Reply, RetryClass, Transport
from .wire import HttpSender, RawRequest, RawResponse

__all__ = [
    "AiohttpSender",
    "Api",
    "Auth",
    "Call",
    "HttpSender",
    "OAuthAuth",
    "RawRequest",
    "RawResponse",
    "Reply",
    "RestTransport",
    "RetryClass",
    "TokenCallback",
    "Transport",
    "WebhookAuth",
]
