"""Integration tier: the real aiohttp transport against the fake portal on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bitrix_results import Limits, NewResult, Outcome, ResultsClient, RetryPolicy
from bitrix_results.testing import PortalConfig, RunningPortal


def limits_of(config: PortalConfig) -> Limits:
    """The client limits that match a (time-compressed) fake portal exactly."""
    return Limits(
        burst=config.effective_burst,
        drain_per_second=config.effective_drain,
        operating_limit=config.effective_limit,
        operating_window=config.effective_window,
    )


#: Fault-heavy tests retry often; a short backoff keeps them quick.
FAST_RETRY = RetryPolicy(base_delay=0.02, max_delay=0.2)


def client_for(running: RunningPortal, **options: object) -> ResultsClient:
    options.setdefault("limits", limits_of(running.portal.config))
    options.setdefault("retry", FAST_RETRY)
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
