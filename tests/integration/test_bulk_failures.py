"""Bad rows, wrong credentials and a portal that is down, through the real transport."""

from __future__ import annotations

import asyncio
import math
import socket
from collections import Counter

import pytest

from bitrix_results import (
    ConnectError,
    InvalidCredentialsError,
    NewResult,
    ResultsClient,
    RetryPolicy,
)
from bitrix_results.errors import BulkAbortedError, OutcomeUnknownError
from bitrix_results.testing import Faults

from .conftest import FAST_RETRY, client_for, limits_of

FAST = {"scale": 100, "drain_per_second": 20.0}
N = 500
CLEAN = 1 + math.ceil((N - 1) / 50)
# Per bad row in a batch of 50: a look at the batch's tasks, then at each of
# ceil(log2 50) levels two halves and a look at the refused half, with its read
# split the same way when the bad row's task refuses to be listed.
PER_BAD_ROW = 1 + 4 * math.ceil(math.log2(50))


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "keep-prefix"])
async def test_two_bad_rows_in_500_cost_log_n_requests_each(make_fake_portal, rollback):
    running = make_fake_portal(**FAST, batch_rollback=rollback)
    items = [NewResult(1 + i % 10, f"row {i}") for i in range(N)]
    # A task that does not exist, and one the webhook's user may not see.
    bad = {137: NewResult(777777, "unknown task"), 312: NewResult(9001, "no access")}
    for index, item in bad.items():
        items[index] = item
    async with client_for(running) as client:
        report = await client.bulk_add(items)
    assert [o.status == "failed" for o in report.outcomes] == [i in bad for i in range(N)]
    on_portal = Counter((r.task_id, r.text) for r in running.portal.ledger.created)
    assert on_portal == Counter((i.task_id, i.text) for n, i in enumerate(items) if n not in bad)
    assert running.portal.ledger.duplicates() == 0
    sent = running.portal.stats().requests
    # The report counts what this job sent, every request the portal saw.
    assert report.requests == sent
    assert CLEAN < sent <= CLEAN + 2 * PER_BAD_ROW
    assert report.resent > 0
    # The bound is for the requests sent, so the job never beats it.
    assert report.ideal_seconds(limits_of(running.portal.config)) <= report.elapsed


async def test_a_wrong_webhook_code_stops_the_job_at_once(make_fake_portal):
    running = make_fake_portal(**FAST)
    code = running.portal.config.webhook_code
    wrong = running.webhook_url.replace(code, "wr0ngc0de0000000")
    items = [NewResult(1 + i % 10, f"row {i}") for i in range(N)]
    async with ResultsClient.from_webhook(wrong, retry=FAST_RETRY) as client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add(items)
    assert isinstance(caught.value.cause, InvalidCredentialsError)
    assert "wr0ngc0de" not in str(caught.value) + str(caught.value.cause)
    # One request, refused; no row is reported failed (none was tried).
    assert running.portal.stats().requests == 1
    assert caught.value.report.outcomes == []
    assert not running.portal.ledger.created


def _refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
async def test_a_refused_port_stops_the_job_with_portal_unreachable(batch):
    url = f"http://127.0.0.1:{_refused_port()}/rest/1/f4k3w3bh00kc0d31/"
    retry = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
    items = [NewResult(1 + i % 10, f"row {i}") for i in range(N)]
    async with ResultsClient.from_webhook(url, retry=retry) as client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add(items, batch=batch)
        sent = client.statistics().requests_sent
    cause = caught.value.cause
    assert isinstance(cause, ConnectError)
    assert "portal unreachable" in str(cause)
    assert "f4k3w3bh00kc0d31" not in str(caught.value)
    assert caught.value.report.outcomes == []
    # Three requests of the job, each tried as often as the retry policy says.
    assert sent == 3 * retry.max_attempts


async def test_a_silent_first_item_is_tried_as_the_retry_policy_says_not_nine_times(
    make_fake_portal,
):
    # Every add answers too late for the client: the first item's outcome stays
    # unknown. The job sends it once (the scheduler's attempts), then stops.
    running = make_fake_portal(
        **FAST,
        faults=Faults(slow=1.0, slow_seconds=0.3, methods=frozenset({"tasks.task.result.add"})),
    )
    # Settle time: the fake portal's late answer, not a real portal's 60 s cut-off.
    retry = RetryPolicy(max_attempts=3, base_delay=0.0, settle_time=0.5)
    items = [NewResult(1 + i % 10, f"row {i}") for i in range(N)]
    async with client_for(running, retry=retry, timeout=0.2) as client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add(items)
        # Let the portal's late answers go out before it is stopped.
        await asyncio.sleep(0.4)
    assert isinstance(caught.value.cause, OutcomeUnknownError)
    assert caught.value.report.outcomes == []
    assert running.portal.stats().requests == retry.max_attempts
