"""Network failures become typed transport errors, retried only when safe (design §2.4)."""

from __future__ import annotations

import pytest

from bitrix_results import (
    ConnectError,
    ConnectionLostError,
    OutcomeUnknownError,
    RequestTimeoutError,
    TransportError,
)

from ._portal import WEBHOOK, MockPortal, item, ok

LIST = WEBHOOK.url("v3", "tasks.task.result.list")
ADD = WEBHOOK.url("v3", "tasks.task.result.add")
ADD_FROM_COMMENT = WEBHOOK.url("v2", "tasks.task.result.addFromComment")

# What a sender raises for each kind of failure (aiohttp's own exceptions and how
# they map to these: test_aiohttp_sender.py).


def refused() -> ConnectError:
    return ConnectError("could not connect to portal.example")


def lost() -> ConnectionLostError:
    return ConnectionLostError("portal.example closed the connection")


def timed_out() -> RequestTimeoutError:
    return RequestTimeoutError("no answer in time from portal.example")


@pytest.mark.parametrize(
    ("exception", "cls"),
    [
        pytest.param(refused(), ConnectError, id="connect-refused"),
        pytest.param(timed_out(), RequestTimeoutError, id="read-timeout"),
        pytest.param(lost(), ConnectionLostError, id="disconnected"),
    ],
)
async def test_read_retried_then_raises_typed_error(
    mock: MockPortal, exception: Exception, cls: type[TransportError]
) -> None:
    mock.post(LIST, exception=exception, repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(cls) as info:
            await client.list(42)

    assert info.value is exception
    # A read is safe to repeat: four attempts in these tests; a refused connection
    # is not ambiguous, just down: two quick retries (RetryPolicy.connect_retries).
    attempts = 3 if cls is ConnectError else 4
    assert len(mock.sent_to(LIST)) == attempts


async def test_keyed_write_recovers_after_a_lost_answer(mock: MockPortal) -> None:
    mock.post(ADD, exception=lost())
    mock.post(ADD, payload=ok({"item": item(7)}), headers={"Idempotent-Replayed": "true"})

    async with WEBHOOK.make() as client:
        assert (await client.add(42, "Done")).id == 7

    sent = mock.sent_to(ADD)
    assert len(sent) == 2
    assert sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"]


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(timed_out(), id="timeout"),
        pytest.param(lost(), id="disconnected"),
    ],
)
async def test_unkeyed_write_is_not_resent(mock: MockPortal, exception: Exception) -> None:
    # REST v2 has no Idempotency-Key: after a lost answer the call may have run.
    mock.post(ADD_FROM_COMMENT, exception=exception, repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add_from_comment(100)

    assert isinstance(info.value.cause, RequestTimeoutError | ConnectionLostError)
    assert len(mock.sent_to(ADD_FROM_COMMENT)) == 1


async def test_unkeyed_write_is_resent_when_it_never_left(mock: MockPortal) -> None:
    # A refused connection means nothing reached the portal: safe even for v2.
    mock.post(ADD_FROM_COMMENT, exception=refused())
    mock.post(ADD_FROM_COMMENT, payload=ok({"id": 3, "taskId": 42, "files": None}))

    async with WEBHOOK.make() as client:
        assert (await client.add_from_comment(100)).id == 3

    assert len(mock.sent_to(ADD_FROM_COMMENT)) == 2
