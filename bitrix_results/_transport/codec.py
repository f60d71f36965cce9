"""Bytes to typed values: the one place where response bodies become replies or errors."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ..errors import DecodeError, PortalError, portal_error
from ..models import Envelope, ResponseTime, ValidationDetail, _V3Error
from .scrub import scrub_text
from .types import Reply

__all__ = ["decode_reply", "decode_result", "encode", "error_from_body"]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_envelope = msgspec.json.Decoder(Envelope)


class _RawTimeEnvelope(msgspec.Struct, frozen=True):
    # The fallback of decode_reply: Envelope's fields, with ``time`` left raw.
    result: msgspec.Raw = msgspec.Raw(b"null")
    time: msgspec.Raw = msgspec.Raw(b"null")
    error: str | _V3Error | None = None
    error_description: str | None = None


_raw_time_envelope = msgspec.json.Decoder(_RawTimeEnvelope)
_time = msgspec.json.Decoder(ResponseTime)


def _envelope_with_advisory_time(body: bytes) -> Envelope:
    """Decode an envelope whose ``time`` did not fit :class:`ResponseTime`.

    The ``time`` block is advisory (api-facts §2.1: its fields "may vary"): a malformed
    one (a documentation example sends ``operating_reset_at`` as a date string) never
    costs the reply. It becomes ``None``, so the scheduler learns nothing from it.
    Raises ``msgspec.DecodeError`` when the rest of the body is not an envelope either.
    """
    loose = _raw_time_envelope.decode(body)
    time: ResponseTime | None = None
    if bytes(loose.time) != b"null":
        try:
            time = _time.decode(loose.time)
        except (msgspec.DecodeError, RecursionError):
            time = None
    return Envelope(
        result=loose.result,
        time=time,
        error=loose.error,
        error_description=loose.error_description,
    )


class _V2BatchTimes(msgspec.Struct):
    # Empty collections come as [] in v2 batch answers (api-facts §3.1).
    result_time: dict[str, ResponseTime] | list[ResponseTime] = msgspec.field(default_factory=dict)


_v2_batch_times = msgspec.json.Decoder(_V2BatchTimes)


def _batch_time(result: msgspec.Raw, envelope_time: ResponseTime | None) -> ResponseTime | None:
    """The ``time`` to learn from for a REST v2 batch.

    When the portal bills the nested methods, the envelope's ``operating`` can be
    0 while each command's ``result_time`` carries the real running total
    (design §7.1); take the largest. A REST 3.0 batch answers with a list and has
    only the envelope's time.
    """
    try:
        times = _v2_batch_times.decode(result).result_time
    except (msgspec.DecodeError, RecursionError):
        return envelope_time
    commands = list(times.values()) if isinstance(times, dict) else times
    candidates = [
        t for t in (envelope_time, *commands) if t is not None and t.operating is not None
    ]
    if not candidates:
        return envelope_time
    busiest = max(candidates, key=lambda t: t.operating or 0.0)
    if envelope_time is None:
        return busiest
    return msgspec.structs.replace(
        envelope_time,
        operating=busiest.operating,
        operating_reset_at=busiest.operating_reset_at,
    )


# Decoders for ``result`` are built once per target type and reused (msgspec docs:
# a Decoder caches its type's validation plan).
_decoders: dict[object, msgspec.json.Decoder[Any]] = {}


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def decode_result(raw: msgspec.Raw, target: type[T], *, method: str, strict: bool = True) -> T:
    """Decode a reply's ``result`` into ``target``. REST v2 sends numbers as strings,
    so its shapes are read with ``strict=False``."""
    key = (target, strict)
    decoder = _decoders.get(key)
    if decoder is None:
        decoder = _decoders[key] = msgspec.json.Decoder(target, strict=strict)
    try:
        value: T = decoder.decode(raw)
    # RecursionError: msgspec decodes nested JSON recursively; a hostile body
    # nested 100k deep exhausts the stack (design §2.6: only library errors).
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DecodeError(f"unexpected result shape: {exc}", method=method, status=200) from exc
    return value


def error_from_body(
    envelope: Envelope, status: int, method: str, secrets: tuple[str, ...] = ()
) -> PortalError:
    """The typed error an error body carries; the one place server text enters an error.

    Every string the portal sent is scrubbed of ``secrets`` first: a portal (or a
    proxy in front of it) may quote the request path, which holds the webhook
    code, or echo the body's ``auth`` token (design §2.7).
    """

    def clean(text: str) -> str:
        return scrub_text(text, secrets)

    error = envelope.error
    if isinstance(error, str):
        # REST v2: {"error": "CODE", "error_description": "text"} (api-facts §6).
        return portal_error(
            code=clean(error),
            message=clean(envelope.error_description or ""),
            status=status,
            method=method,
        )
    if error is not None:
        # REST 3.0: {"error": {"code", "message", "validation": [...]}} (api-facts §4.2).
        return portal_error(
            code=clean(error.code),
            message=clean(error.message),
            status=status,
            method=method,
            validation=tuple(
                ValidationDetail(clean(d.message), None if d.field is None else clean(d.field))
                for d in error.validation
            ),
        )
    return portal_error(code="", message=f"HTTP {status}", status=status, method=method)


def decode_reply(
    body: bytes,
    *,
    status: int,
    method: str,
    replayed: bool = False,
    secrets: tuple[str, ...] = (),
) -> Reply:
    """A response body as a :class:`Reply`, or the typed error it carries.

    A body that is not JSON (an HTML error page from a proxy, api-facts §6) becomes a
    :class:`DecodeError` that keeps the HTTP status, so the scheduler can still
    tell a 5xx (the call may have run) from a 4xx.
    """
    try:
        envelope = _envelope.decode(body)
    except RecursionError as exc:
        # Even a Raw ``result`` is walked recursively by msgspec: a body nested
        # 100k deep exhausts the stack (design §2.6: only library errors).
        raise DecodeError(
            "the body is nested too deep to be an API response", method=method, status=status
        ) from exc
    except msgspec.DecodeError as exc:
        # Off the hot path: only a body the strict decoder refused gets a second look.
        try:
            envelope = _envelope_with_advisory_time(body)
        except (msgspec.DecodeError, RecursionError):
            raise DecodeError(
                "the body is not a JSON API response", method=method, status=status
            ) from exc
    if envelope.error is not None or status >= 400:
        raise error_from_body(envelope, status, method, secrets)
    time = envelope.time
    # A view, not a copy: only the first byte tells a v2 object from a v3 list.
    if method == "batch" and memoryview(envelope.result)[:1].tobytes() == b"{":
        time = _batch_time(envelope.result, time)
    return Reply(status=status, result=envelope.result, time=time, replayed=replayed)
