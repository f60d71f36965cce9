"""Async client for the Bitrix24 task-results API, paced to the portal's limits.

The public names are re-exported here; everything in a module whose name starts
with an underscore is private.
"""

from ._scheduler import (
    Limits,
    MemoryBackend,
    RedisBackend,
    RetryPolicy,
    Scheduler,
    SchedulerStatistics,
)
from .bulk import BulkReport, Outcome, Progress, TaskResults
from .client import ResultsClient
from .errors import (
    AccessDeniedError,
    AuthError,
    BatchError,
    BitrixError,
    BulkAbortedError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    ExpiredTokenError,
    IdempotencyKeyError,
    InvalidCredentialsError,
    InvalidInputError,
    InvalidRequestError,
    NotFoundError,
    OAuthError,
    OperatingLimitError,
    OutcomeUnknownError,
    PortalError,
    RateLimitError,
    RedirectRefusedError,
    RequestTimeoutError,
    ServerError,
    ServiceBlockedError,
    TransportError,
)
from .models import (
    LegacyTaskResult,
    NewResult,
    OAuthTokens,
    ResponseTime,
    ResultRights,
    TaskResult,
    ValidationDetail,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AuthError",
    "BatchError",
    "BitrixError",
    "BulkAbortedError",
    "BulkReport",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "ExpiredTokenError",
    "IdempotencyKeyError",
    "InvalidCredentialsError",
    "InvalidInputError",
    "InvalidRequestError",
    "LegacyTaskResult",
    "Limits",
    "MemoryBackend",
    "NewResult",
    "NotFoundError",
    "OAuthError",
    "OAuthTokens",
    "OperatingLimitError",
    "Outcome",
    "OutcomeUnknownError",
    "PortalError",
    "Progress",
    "RateLimitError",
    "RedirectRefusedError",
    "RedisBackend",
    "RequestTimeoutError",
    "ResponseTime",
    "ResultRights",
    "ResultsClient",
    "RetryPolicy",
    "Scheduler",
    "SchedulerStatistics",
    "ServerError",
    "ServiceBlockedError",
    "TaskResult",
    "TaskResults",
    "TransportError",
    "ValidationDetail",
    "__version__",
]
