"""Integration tier: the real aiohttp transport against the fake portal on 127.0.0.1."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pytest

from bitrix_results import Limits, NewResult, Outcome, ResultsClient, RetryPolicy, Scheduler
from bitrix_results._scheduler import DEFAULT_HEADROOM
from bitrix_results.testing import PortalConfig, RunningPortal


def limits_of(config: PortalConfig) -> Limits:
    """The client limits that match a (time-compressed) fake portal exactly."""
    return Limits(
        burst=config.effective_burst,
        drain_per_second=config.effective_drain,
        operating_limit=config.effective_limit,
        operating_window=config.effective_window,
    )


@pytest.fixture(autouse=True)
def fake_portal_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake portal's late calls end within seconds, not the cloud's 60 s cut-off
    (api-facts §1): bulk verification waits that long after a timeout, not a minute."""
    monkeypatch.setattr("bitrix_results._bulk.verify.SETTLE_SECONDS", 2.0)


#: Fault-heavy tests retry often; a short backoff keeps them quick. The settle
#: time before a keyed write's same-key resend is the fake portal's, not a real
#: one's 60 s cut-off: no test here runs a call later than 1 s after it arrived.
FAST_RETRY = RetryPolicy(base_delay=0.02, max_delay=0.2, settle_time=1.0)


def headroom_for(config: PortalConfig) -> int:
    """Bucket headroom for a time-compressed portal.

    The default (2 requests) absorbs a second of arrival jitter at the real 2/s.
    Compression multiplies the drain but not the jitter of a busy 2-core test
    machine (client and portal share one process), so the headroom grows with it:
    about 30 ms of jitter is absorbed at any scale.
    """
    return max(DEFAULT_HEADROOM, math.ceil(config.effective_drain * 0.03))


def client_for(running: RunningPortal, **options: object) -> ResultsClient:
    if "scheduler" not in options:
        config = running.portal.config
        limits = options.pop("limits", None) or limits_of(config)
        retry = options.pop("retry", None) or FAST_RETRY
        options["scheduler"] = Scheduler(
            limits,  # type: ignore[arg-type]
            headroom=headroom_for(config),
            retry=retry,  # type: ignore[arg-type]
        )
    return ResultsClient.from_webhook(running.webhook_url, **options)  # type: ignore[arg-type]


def assert_exactly_once(
    running: RunningPortal, items: Sequence[NewResult], outcomes: Sequence[Outcome]
) -> None:
    """Every item created exactly once on the portal, reported in input order."""
    assert [o.index for o in outcomes] == list(range(len(items)))
    assert all(o.status == "created" for o in outcomes), [
        (o.index, o.error) for o in outcomes if o.status == "failed"
    ][:5]
    on_portal = Counter((r.task_id, r.text) for r in running.portal.ledger.created)
    wanted = Counter((i.task_id, i.text) for i in items)
    assert on_portal == wanted
    if len(wanted) == len(items):
        # Unique inputs: the portal's own duplicate counter must agree.
        assert running.portal.ledger.duplicates() == 0
    # Each outcome points at a distinct result that really is the item's.
    ids = [o.result.id for o in outcomes if o.result is not None]
    assert len(set(ids)) == len(items)
    by_id = {r.id: r for r in running.portal.ledger.created}
    for o in outcomes:
        assert o.result is not None
        assert (by_id[o.result.id].task_id, by_id[o.result.id].text) == (
            o.item.task_id,
            o.item.text,
        )
