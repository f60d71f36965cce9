"""Item 5 of issue 9: a 200 whose body cannot be decoded, after a write, is an unknown outcome.

The portal said 200: the write may well have happened. A plain DecodeError told
the caller nothing ran; now a write no key protects raises OutcomeUnknownError,
a keyed REST 3.0 write is sent again with the same key (the portal replays), and
a read still raises DecodeError.
"""

from __future__ import annotations

import asyncio

import pytest

from bitrix_results import DecodeError, OutcomeUnknownError

from ._helpers import item, ok, webhook
from .conftest import Received, ServeFactory, response

HTML = b"<html><body>Bitrix24 is updating</body></html>"


def _script(*bodies: bytes):  # type: ignore[no-untyped-def]
    answers = list(bodies)

    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        body = answers.pop(0) if len(answers) > 1 else answers[0]
        writer.write(response(200, body, {"Content-Type": "text/html"}))
        await writer.drain()

    return handler


async def test_an_unkeyed_write_answered_with_html_is_an_unknown_outcome(
    serve: ServeFactory,
) -> None:
    server = await serve(_script(HTML))
    async with webhook(server.origin, attempts=3) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add_from_comment(5)
    assert isinstance(info.value.cause, DecodeError)
    assert info.value.cause.status == 200
    # Not sent again: it may have executed.
    assert len(server.received) == 1


async def test_a_keyed_write_is_resent_with_the_same_key(serve: ServeFactory) -> None:
    server = await serve(_script(HTML, ok({"item": item(9)})))
    async with webhook(server.origin, attempts=3) as client:
        added = await client.add(42, "Done")
    assert added.id == 9
    first, again = server.received
    assert first.headers["idempotency-key"] == again.headers["idempotency-key"]


async def test_a_read_answered_with_html_is_still_a_decode_error(serve: ServeFactory) -> None:
    server = await serve(_script(HTML))
    async with webhook(server.origin, attempts=3) as client:
        with pytest.raises(DecodeError):
            await client.list(42)
    assert len(server.received) == 1


@pytest.mark.parametrize("api", ["v3", "v2"])
async def test_a_successful_write_whose_result_cannot_be_read_is_an_unknown_outcome(
    serve: ServeFactory, api: str
) -> None:
    # The envelope says the write ran; only its result is not the shape we
    # know. Reporting a failure would invite sending it again.
    server = await serve(_script(ok({"item": "not an item"} if api == "v3" else [1, 2])))
    async with webhook(server.origin, attempts=3) as client:
        write = client.add(42, "Done") if api == "v3" else client.add_from_comment(5)
        with pytest.raises(OutcomeUnknownError) as info:
            await write
    assert isinstance(info.value.cause, DecodeError)
    assert len(server.received) == 1
