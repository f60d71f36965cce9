"""Every error ``bitrix_results`` raises, in one tree.

::

    BitrixError
    ├── InvalidInputError (also ValueError)   bad input caught before anything was sent
    ├── TransportError                        the HTTP exchange did not complete
    │   ├── ConnectError                      never reached the portal (safe to retry)
    │   ├── RequestTimeoutError               sent, no answer in time (may have executed)
    │   ├── ConnectionLostError               sent, connection dropped (may have executed)
    │   ├── ResponseTooLargeError             the answer was over the body cap (may have executed)
    │   └── RedirectRefusedError              a redirect to a host we may not follow
    ├── DecodeError                           a body that is not the JSON we expect (HTML page)
    ├── OutcomeUnknownError                   a write may or may not have executed; not retried
    ├── BulkAbortedError                      a bulk job stopped early; carries its partial report
    ├── OAuthError                            the token endpoint refused a refresh
    ├── LimiterUnavailableError               the shared limiter (Redis) is unreachable: not sent
    └── PortalError                           the portal answered with an error code
        ├── RateLimitError                    503 QUERY_LIMIT_EXCEEDED (not executed)
        ├── OperatingLimitError               429 OPERATION_TIME_LIMIT (not executed)
        ├── AuthError                         401/403 credentials
        │   ├── ExpiredTokenError             401 expired_token: refresh and repeat
        │   └── InvalidCredentialsError       NO_AUTH_FOUND, INVALID_CREDENTIALS, scope...
        ├── AccessDeniedError                 no permission on the object or the plan
        ├── NotFoundError                     the object or the method does not exist
        ├── InvalidRequestError               the portal's validation refused the request
        ├── IdempotencyKeyError               key reused with another body, or malformed
        ├── BatchError                        too many commands, or a method not allowed in batch
        ├── ServiceBlockedError               REST blocked or portal gone: support must act
        └── ServerError                       5xx: the call may have executed

Portal errors are classified by error code first and HTTP status second, in one
table (:data:`_BY_CODE`, :func:`portal_error`). No error carries a secret: the
transport redacts URLs before they reach a message.
"""

from __future__ import annotations

from typing import Literal

from ._bulk.types import BulkReport
from .models import ValidationDetail

__all__ = [
    "AccessDeniedError",
    "AuthError",
    "BatchError",
    "BitrixError",
    "BulkAbortedError",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "ExpiredTokenError",
    "IdempotencyKeyError",
    "InvalidCredentialsError",
    "InvalidInputError",
    "InvalidRequestError",
    "JournalError",
    "LimiterUnavailableError",
    "NotFoundError",
    "OAuthError",
    "OperatingLimitError",
    "OutcomeUnknownError",
    "PortalError",
    "RateLimitError",
    "RedirectRefusedError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ServerError",
    "ServiceBlockedError",
    "TransportError",
    "portal_error",
]


class BitrixError(Exception):
    """Root of every error raised by ``bitrix_results``.

    ``except BitrixError`` catches every failure the library reports, apart from
    the ``TypeError`` of a misspelt keyword argument. No error's message, repr or
    ``__cause__`` chain carries a webhook code or a token. Errors pickle with their
    attributes (to cross process boundaries).
    """

    def __reduce__(self) -> tuple[object, ...]:
        # The default rebuilds an exception as ``cls(*self.args)``, but ``args``
        # holds the formatted message, not the constructor's arguments, so most
        # errors here failed to unpickle (multiprocessing sends them between
        # processes). Rebuild without __init__: the same args, then the same
        # attributes (and notes) from __dict__.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[BitrixError], args: tuple[object, ...]) -> BitrixError:
    """Unpickle a library error: a bare instance with its args; pickle then sets its state."""
    error = cls.__new__(cls)
    error.args = args
    return error


class InvalidInputError(BitrixError, ValueError):
    """Input refused before anything was sent; ``field`` names what was wrong.

    Nothing was sent and nothing created: fix the argument and call again. It is
    also a ``ValueError``.
    """

    def __init__(self, field: str, message: str) -> None:
        #: The argument or option that was wrong (``"task_id"``, ``"order[id]"``...).
        self.field: str = field
        #: What was wrong with it.
        self.message: str = message
        super().__init__(f"{field}: {message}")


class TransportError(BitrixError):
    """The HTTP exchange with the portal did not complete.

    Raised once the retry policy gave up, for a read or for a failure that never
    reached the portal. Whether anything was created depends on the subclass: a
    `ConnectError` never reached it; after `RequestTimeoutError`,
    `ConnectionLostError` or `ResponseTooLargeError` it may have executed (a write
    then raises `OutcomeUnknownError` instead).
    """

    def __init__(self, message: str, *, method: str | None = None) -> None:
        #: The REST method of the call, when known.
        self.method: str | None = method
        super().__init__(message if method is None else f"{method}: {message}")


#: Why a connection could not be made (:attr:`ConnectError.reason`).
ConnectReason = Literal["refused", "dns", "tls", "timeout", "other"]


class ConnectError(TransportError):
    """The request never reached the portal: nothing ran, so it is safe to repeat.

    ``reason`` says why, and the message says it in words: ``"refused"`` (nothing
    listens on the port: "connection refused"), ``"dns"`` (the host name does not
    resolve: "name not resolved"), ``"tls"`` (the TLS handshake or the certificate
    failed: "TLS handshake failed"), ``"timeout"`` (no connection in time) or
    ``"other"``. The first three will not heal by waiting a few seconds.
    """

    def __init__(
        self, message: str, *, method: str | None = None, reason: ConnectReason = "other"
    ) -> None:
        #: Why: ``"refused"``, ``"dns"``, ``"tls"``, ``"timeout"`` or ``"other"``.
        self.reason: ConnectReason = reason
        super().__init__(message, method=method)


class RequestTimeoutError(TransportError):
    """The request was sent but no answer came in time: it may have executed.

    A read raises it after the retries; a write raises `OutcomeUnknownError`. The
    time allowed is the ``timeout`` option (65 s by default).
    """


class ConnectionLostError(TransportError):
    """The connection closed after the request was sent: it may have executed.

    A read raises it after the retries; a write raises `OutcomeUnknownError`.
    """


class ResponseTooLargeError(TransportError):
    """The answer was larger than the client's cap (``max_body_bytes``), raw or inflated.

    Reading stopped at the cap, so no memory was spent on the rest. The request
    was sent and may have executed: a write no Idempotency-Key protects becomes
    :class:`OutcomeUnknownError`, like a lost answer.
    """


class RedirectRefusedError(TransportError):
    """The portal redirected to a host this client is not allowed to follow.

    The redirect was not followed, so the request did not reach the new host
    (the original host may have acted on it). Allow the host with the
    ``follow_redirects_to`` option if it is yours; https to http is never followed.
    """


class DecodeError(BitrixError):
    """A response body that is not the JSON we expect, such as an HTML error page.

    The portal (or a proxy before it) answered: one with a 5xx status is retried
    like a server error. A write the portal answered as done, but whose result
    cannot be read, raises `OutcomeUnknownError` instead (the write happened).
    """

    def __init__(self, message: str, *, method: str | None, status: int) -> None:
        #: The REST method of the call, when known.
        self.method: str | None = method
        #: The HTTP status of the answer.
        self.status: int = status
        super().__init__(f"{method}: HTTP {status}: {message}" if method else message)


class OutcomeUnknownError(BitrixError):
    """A write failed in a way that may have executed it, and it cannot be retried safely.

    Raised for calls no Idempotency-Key protects (REST v2 writes), for any write
    whose retries ran out after an attempt that may have executed, and for a write
    the portal answered as done but whose result could not be read. Something
    may have been created: look on the portal (list the task's results) before
    sending it again.
    """

    def __init__(self, method: str, cause: BaseException) -> None:
        #: The REST method of the write.
        self.method: str = method
        #: The transport or server error that left the outcome unknown.
        self.cause: BaseException = cause
        super().__init__(
            f"{method}: the outcome is unknown ({type(cause).__name__}: {cause}); "
            "check the portal before sending it again"
        )


class LimiterUnavailableError(BitrixError):
    """The shared rate limiter (``RedisBackend``) could not be reached in time.

    Raised before the call was sent: the request never left, so it is safe to
    send again once the limiter is back. ``waited`` is how long the call kept
    retrying Redis; ``cause`` names what failed (the Redis client's exception,
    which carries no credential).
    """

    def __init__(self, cause: BaseException, *, waited: float) -> None:
        #: The Redis client's exception.
        self.cause: BaseException = cause
        #: Seconds the call kept retrying Redis.
        self.waited: float = waited
        super().__init__(
            f"the shared rate limiter (Redis) is unavailable after {waited:.1f} s "
            f"({type(cause).__name__}); the call was not sent"
        )


class BulkAbortedError(BitrixError):
    """A bulk job stopped before its input was done, for ``cause``.

    ``report`` holds the outcome of every item that settled before it stopped
    (the work in flight was let finish); items after those were not sent. With a
    journal, running the job again finishes the rest exactly.
    """

    def __init__(self, report: BulkReport, cause: BaseException) -> None:
        #: The outcome of every item that settled before the job stopped.
        self.report: BulkReport = report
        #: The error that stopped the job.
        self.cause: BaseException = cause
        super().__init__(
            f"the bulk job stopped ({type(cause).__name__}: {cause}); "
            f"{report.created} created and {report.failed} failed before it stopped"
        )


class JournalError(BitrixError, ValueError):
    """A bulk journal that cannot be used: ``path`` names the file.

    Raised for a path that is a directory, unwritable, not a journal (or a
    journal emptied after a job ran), and for a journal of another job, portal,
    credential or input; ``field`` then names what differs (``"job_id"``,
    ``"portal"``, ``"credential"``, ``"input"``), else it is None. Raised before
    the job sends anything, so nothing was created by this run. It is also a
    ``ValueError``.
    """

    def __init__(self, path: object, message: str, *, field: str | None = None) -> None:
        #: The journal's path.
        self.path: str = str(path)
        #: What differs from the job (``"job_id"``, ``"portal"``...), or None.
        self.field: str | None = field
        #: What is wrong with the journal.
        self.message: str = message
        super().__init__(f"journal: {self.path} {message}")


class OAuthError(BitrixError):
    """The OAuth server refused to refresh the tokens (``invalid_grant``, ...).

    The call waiting for the refresh was not sent again, so nothing was created by
    it (unless an earlier attempt of a write was ambiguous: then
    `OutcomeUnknownError`). The refresh token is probably spent or revoked: the
    application must be authorised again.
    """

    def __init__(self, code: str, message: str) -> None:
        #: The OAuth server's error code.
        self.code: str = code
        #: Its description.
        self.message: str = message
        super().__init__(f"{code}: {message}")


class PortalError(BitrixError):
    """The portal answered with an error body.

    Subclasses name the kind; an unknown code with an unknown status is a plain
    ``PortalError``. Unless a subclass says otherwise, the portal refused the call
    and nothing was created.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        method: str | None = None,
        validation: tuple[ValidationDetail, ...] = (),
    ) -> None:
        #: The portal's error text.
        self.message: str = message
        #: The portal's error code (``"ACCESS_DENIED"``, ``"QUERY_LIMIT_EXCEEDED"``...).
        self.code: str = code
        #: The HTTP status.
        self.status: int = status
        #: The REST method of the call, when known.
        self.method: str | None = method
        #: The REST 3.0 validation details (may be empty).
        self.validation: tuple[ValidationDetail, ...] = validation
        text = f"{code} (HTTP {status}): {message}"
        if validation:
            text += " [" + "; ".join(_detail(d) for d in validation) + "]"
        super().__init__(f"{method}: {text}" if method else text)


def _detail(detail: ValidationDetail) -> str:
    return f"{detail.field}: {detail.message}" if detail.field else detail.message


class RateLimitError(PortalError):
    """503 ``QUERY_LIMIT_EXCEEDED``: the request bucket is full; nothing executed.

    The scheduler retries it; you see it only when the retry policy's attempts or
    time ran out (another client is probably using the same webhook hard).
    """


class OperatingLimitError(PortalError):
    """429 ``OPERATION_TIME_LIMIT``: this method's time budget is spent; nothing executed.

    The scheduler waits for the budget and retries; you see it only when the retry
    policy ran out. (Inside a write batch it is ambiguous: earlier commands may
    have run; bulk import reconciles that.)
    """


class AuthError(PortalError):
    """The credentials were refused; nothing was executed.

    Catch this for both subclasses.
    """


class ExpiredTokenError(AuthError):
    """401 ``expired_token``: the OAuth access token must be refreshed (api-facts §7).

    An OAuth client refreshes and repeats the call itself; a webhook client never
    sees it.
    """

    #: Which token generation was refused, so that many calls failing together
    #: cause one refresh (set by the transport).
    auth_generation: int = 0


class InvalidCredentialsError(AuthError):
    """Wrong webhook code or token, or the credential lacks a scope or permission.

    Nothing was executed. Check the webhook URL and its scopes (``task``).
    """


class AccessDeniedError(PortalError):
    """The user may not touch this object, or REST is not on the portal's plan.

    Nothing was executed. ``update`` and ``delete`` raise it for a result the user
    did not write.
    """


class NotFoundError(PortalError):
    """The object or the method does not exist; nothing was executed."""


class InvalidRequestError(PortalError):
    """The portal's validation refused the request (missing field, wrong type, ...).

    Nothing was executed; ``validation`` holds the REST 3.0 details.
    """


class IdempotencyKeyError(PortalError):
    """The Idempotency-Key was reused with another body, or is malformed (api-facts §4.1).

    Nothing was executed for this body. The key already names another write: use a
    fresh key for a different result.
    """


class BatchError(PortalError):
    """The batch itself was refused: too many commands, or a method not allowed in batch.

    None of the batch's commands ran.
    """


class ServiceBlockedError(PortalError):
    """REST is blocked for the portal or the portal is gone; retrying will not help.

    Nothing was executed; the portal's administrator or Bitrix24 support must act
    (``PAYMENT_REQUIRED``, ``OVERLOAD_LIMIT``, ``PORTAL_DELETED``).
    """


class ServerError(PortalError):
    """A 5xx from the portal: the call may have executed.

    Reads and keyed writes are retried; you see it when the retry policy ran out
    (for a write, as the ``cause`` of `OutcomeUnknownError`).
    """


_V3 = "BITRIX_REST_V3_EXCEPTION_"

# The one table from error code to class (api-facts §4.2 and §6). Codes are matched
# exactly; REST 3.0 codes are also matched by suffix after the common prefix so a
# new ``VALIDATION_*`` variant still lands on the right branch.
_BY_CODE: dict[str, type[PortalError]] = {
    "QUERY_LIMIT_EXCEEDED": RateLimitError,
    "OPERATION_TIME_LIMIT": OperatingLimitError,
    "expired_token": ExpiredTokenError,
    "NO_AUTH_FOUND": InvalidCredentialsError,
    "INVALID_CREDENTIALS": InvalidCredentialsError,
    "insufficient_scope": InvalidCredentialsError,
    "invalid_token": InvalidCredentialsError,
    "WRONG_AUTH_TYPE": InvalidCredentialsError,
    "AUTHORIZATION_ERROR": InvalidCredentialsError,
    "ACCESS_DENIED": AccessDeniedError,
    "user_access_error": AccessDeniedError,
    "ALLOWED_ONLY_INTRANET_USER": AccessDeniedError,
    "ACCESS_ERROR": AccessDeniedError,
    "PAYMENT_REQUIRED": ServiceBlockedError,
    "OVERLOAD_LIMIT": ServiceBlockedError,
    "PORTAL_DELETED": ServiceBlockedError,
    "ERROR_METHOD_NOT_FOUND": NotFoundError,
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": NotFoundError,
    "NOT_FOUND": NotFoundError,
    "INVALID_REQUEST": InvalidRequestError,
    "INVALID_ARG_VALUE": InvalidRequestError,
    "ERROR_CORE": InvalidRequestError,
    "ERROR_BATCH_LENGTH_EXCEEDED": BatchError,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": BatchError,
    "INTERNAL_SERVER_ERROR": ServerError,
    "ERROR_UNEXPECTED_ANSWER": ServerError,
    # REST v2 task methods answer with numeric codes: "100" is a type error (api-facts §5.6-5.8).
    "100": InvalidRequestError,
    _V3 + "ACCESSDENIEDEXCEPTION": AccessDeniedError,
    _V3 + "INSUFFICIENTSCOPEEXCEPTION": InvalidCredentialsError,
    _V3 + "ENTITYNOTFOUNDEXCEPTION": NotFoundError,
    _V3 + "METHODNOTFOUNDEXCEPTION": NotFoundError,
    _V3 + "IDEMPOTENCYKEYREUSEDEXCEPTION": IdempotencyKeyError,
    _V3 + "INVALIDIDEMPOTENCYKEYEXCEPTION": IdempotencyKeyError,
}

# Fallback when the code is unknown: the HTTP status (api-facts §6, "classify by code
# first and fall back to the status").
_BY_STATUS: dict[int, type[PortalError]] = {
    400: InvalidRequestError,
    401: InvalidCredentialsError,
    403: AccessDeniedError,
    404: NotFoundError,
    405: BatchError,
    410: ServiceBlockedError,
    422: InvalidRequestError,
    429: OperatingLimitError,
}


def _class_for(code: str, status: int, message: str) -> type[PortalError]:
    if (cls := _BY_CODE.get(code)) is not None:
        return cls
    if code.startswith(_V3):
        # Every other REST 3.0 exception is a refusal of the request's shape
        # (validation, filter, order, pagination, select, JSON; api-facts §4.2).
        return InvalidRequestError
    if code == "0":
        # REST v2 task methods reuse "0" for several meanings; the text tells them
        # apart (api-facts §5.6-5.8: "Access denied.", "Comment not found.",
        # "Result already exists.").
        lowered = message.lower()
        if "access denied" in lowered:
            return AccessDeniedError
        if "not found" in lowered:
            return NotFoundError
        return InvalidRequestError
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, PortalError)


def portal_error(
    *,
    code: str,
    message: str,
    status: int,
    method: str | None = None,
    validation: tuple[ValidationDetail, ...] = (),
) -> PortalError:
    """Build the typed error for a portal error body: code first, HTTP status second.

    Used by the transport and by fakes that must raise what a real portal would.

    Args:
        code: The portal's error code.
        message: The portal's error text.
        status: The HTTP status.
        method: The REST method of the call.
        validation: The REST 3.0 validation details.

    Returns:
        An instance of the `PortalError` subclass for that code and status.
    """
    cls = _class_for(code, status, message)
    return cls(message, code=code, status=status, method=method, validation=validation)
