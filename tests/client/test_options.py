"""One set of client options (``ClientOptions``), checked the same way by every constructor.

A misspelt name is a TypeError (and a mypy error), a wrong value an
InvalidInputError naming the field, and a scheduler given together with a knob
it already fixes is refused instead of one of the two being dropped silently.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bitrix_results.client
from bitrix_results import (
    ClientOptions,
    InvalidInputError,
    Limits,
    ResultsClient,
    RetryPolicy,
    Scheduler,
    sync,
)
from bitrix_results._options import SCHEDULER_KNOBS
from bitrix_results._transport import AiohttpSender, RestTransport, WebhookAuth
from bitrix_results._transport.urls import parse_webhook

from ._portal import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    PORTAL,
    REFRESH_TOKEN,
    WEBHOOK_URL,
    MockPortal,
    fast_scheduler,
    item,
    ok,
)

ROOT = Path(__file__).parents[2]
CREDENTIALS: dict[str, Any] = {
    "portal": PORTAL,
    "access_token": ACCESS_TOKEN,
    "refresh_token": REFRESH_TOKEN,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
}


def _webhook(**options: Any) -> object:
    return ResultsClient.from_webhook(WEBHOOK_URL, **options)


def _oauth(**options: Any) -> object:
    return ResultsClient.from_oauth(**CREDENTIALS, **options)


def _direct(**options: Any) -> object:
    transport = RestTransport(WebhookAuth(parse_webhook(WEBHOOK_URL)), AiohttpSender())
    return ResultsClient(transport, **options)


def _sync_webhook(**options: Any) -> object:
    with sync.ResultsClient.from_webhook(WEBHOOK_URL, **options) as client:
        return client


def _sync_oauth(**options: Any) -> object:
    with sync.ResultsClient.from_oauth(**CREDENTIALS, **options) as client:
        return client


def _async(client: object) -> ResultsClient:
    """The async client itself, or the one a blocking client drives."""
    if isinstance(client, sync.ResultsClient):
        return client._client
    assert isinstance(client, ResultsClient)
    return client


CONSTRUCTORS = [
    pytest.param(_webhook, id="from_webhook"),
    pytest.param(_oauth, id="from_oauth"),
    pytest.param(_direct, id="ResultsClient"),
    pytest.param(_sync_webhook, id="sync.from_webhook"),
    pytest.param(_sync_oauth, id="sync.from_oauth"),
]


# -- names --------------------------------------------------------------------------


@pytest.mark.parametrize("make", CONSTRUCTORS)
def test_a_misspelt_option_is_a_type_error_with_a_hint(make: Callable[..., object]) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'timout'") as info:
        make(timout=5)
    assert "did you mean 'timeout'?" in str(info.value)


@pytest.mark.parametrize("make", CONSTRUCTORS)
def test_an_unknown_option_is_named(make: Callable[..., object]) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus'$"):
        make(bogus=1)


def test_the_sync_facade_refuses_a_typo_in_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: **options: Any went to the loop thread unchecked.
    built: list[object] = []
    monkeypatch.setattr(sync.ResultsClient, "__init__", lambda self, f: built.append(f))
    with pytest.raises(TypeError, match="timout"):
        sync.ResultsClient.from_webhook(WEBHOOK_URL, timout=5)  # type: ignore[call-arg]
    assert built == []


def test_every_option_is_typed() -> None:
    assert set(ClientOptions.__annotations__) == {
        "limits",
        "scheduler",
        "concurrency",
        "headroom",
        "retry",
        "timeout",
        "follow_redirects_to",
        "max_body_bytes",
        "trust_env",
        "proxy",
        "ssl",
        "insecure_skip_tls_verify",
        "headers",
        "page_size",
    }
    assert ClientOptions.__required_keys__ == frozenset()


def test_mypy_refuses_misspelt_and_mistyped_options() -> None:
    # tests/typing/client_options.py marks each bad call with a type: ignore that
    # --strict reports as unused unless mypy did find the error.
    pytest.importorskip("mypy")
    checked = ROOT / "tests" / "typing" / "client_options.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(checked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- values -------------------------------------------------------------------------

BAD_VALUES = [
    ("concurrency", 0),
    ("concurrency", -3),
    ("concurrency", True),
    ("concurrency", 2.0),
    ("headroom", -1),
    ("headroom", "2"),
    ("timeout", "x"),
    ("timeout", 0),
    ("timeout", -1.0),
    ("timeout", math.nan),
    ("timeout", math.inf),
    ("timeout", False),
    ("limits", 5),
    ("limits", {"burst": 50}),
    ("scheduler", "scheduler"),
    ("retry", 3),
    ("page_size", 0),
]


@pytest.mark.parametrize("make", CONSTRUCTORS)
@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=lambda v: repr(v))
def test_a_wrong_value_names_its_field(
    make: Callable[..., object], field: str, value: object
) -> None:
    with pytest.raises(InvalidInputError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", ["timeout", "follow_redirects_to"])
def test_transport_options_need_the_built_in_transport(field: str) -> None:
    value = 5.0 if field == "timeout" else "other.example"
    with pytest.raises(InvalidInputError) as info:
        _direct(**{field: value})
    assert info.value.field == field


# -- conflicts ----------------------------------------------------------------------

KNOB_VALUES: dict[str, object] = {
    "limits": Limits.standard(),
    "concurrency": 4,
    "headroom": 3,
    "retry": RetryPolicy(),
}


@pytest.mark.parametrize("make", CONSTRUCTORS)
@pytest.mark.parametrize("knob", SCHEDULER_KNOBS)
def test_a_scheduler_and_one_of_its_knobs_conflict(make: Callable[..., object], knob: str) -> None:
    # Before: scheduler= silently won over concurrency= for the scheduler, while the
    # connection pool still used concurrency.
    with pytest.raises(ValueError, match=rf"scheduler or {knob}\b") as info:
        make(scheduler=fast_scheduler(), **{knob: KNOB_VALUES[knob]})
    assert isinstance(info.value, InvalidInputError)
    assert info.value.field == "scheduler"


def test_every_conflicting_knob_is_named() -> None:
    with pytest.raises(InvalidInputError, match="scheduler or concurrency, headroom, not both"):
        _webhook(scheduler=fast_scheduler(), concurrency=4, headroom=1)


def test_none_means_the_default_and_conflicts_with_nothing() -> None:
    client = ResultsClient.from_webhook(WEBHOOK_URL, scheduler=None, limits=None, retry=None)
    assert client.scheduler.limits == Limits.standard()
    scheduler = fast_scheduler()
    client = ResultsClient.from_webhook(WEBHOOK_URL, scheduler=scheduler, limits=None, retry=None)
    assert client.scheduler is scheduler


# -- what the options reach -----------------------------------------------------------


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments each client built its sender and transport with (one dict each)."""
    seen: list[dict[str, Any]] = []
    real_sender, real_transport = AiohttpSender, RestTransport

    def sender(**kwargs: Any) -> AiohttpSender:
        seen.append(dict(kwargs))  # the sender is built first
        return real_sender(**kwargs)

    def transport(*args: Any, **kwargs: Any) -> RestTransport:
        seen[-1].update(kwargs)
        return real_transport(*args, **kwargs)

    monkeypatch.setattr(bitrix_results.client, "AiohttpSender", sender)
    monkeypatch.setattr(bitrix_results.client, "RestTransport", transport)
    return seen


def test_the_pool_has_one_connection_per_scheduler_slot(built: list[dict[str, Any]]) -> None:
    _webhook()
    _oauth(concurrency=3)
    # Before: a scheduler with 64 slots ran over the default 16 connections.
    _webhook(scheduler=Scheduler(Limits.standard(), concurrency=64))
    # By default as many slots as the bucket admits at once: 50 - 2 of headroom,
    # and at most 64 for an enterprise burst of 250.
    _webhook(limits=Limits.enterprise())
    # ... and at least 16 for a small burst with a fast drain (found by review:
    # one slot would keep a drain of 20/s at 2 calls/s with 0.5 s round trips).
    _webhook(limits=Limits(burst=3, drain_per_second=20.0))
    # None is the default, as for the scheduler.
    _webhook(concurrency=None)
    assert [b["max_connections"] for b in built] == [48, 3, 64, 64, 16, 48]


def test_the_sync_facade_sizes_the_pool_the_same_way(built: list[dict[str, Any]]) -> None:
    _sync_webhook(concurrency=5)
    _sync_oauth(scheduler=Scheduler(Limits.standard(), concurrency=7))
    assert [b["max_connections"] for b in built] == [5, 7]


def test_transport_options_reach_the_transport(built: list[dict[str, Any]]) -> None:
    _webhook()
    _oauth(timeout=12.5, follow_redirects_to=["a.example", "b.example"])
    _sync_webhook(timeout=3, follow_redirects_to="c.example")
    assert [(b["timeout"], b["follow_redirects_to"]) for b in built] == [
        (65.0, ()),
        (12.5, ["a.example", "b.example"]),
        (3, "c.example"),
    ]


@pytest.mark.parametrize("make", CONSTRUCTORS)
def test_headroom_reaches_the_scheduler(make: Callable[..., object]) -> None:
    limits = Limits.standard()
    # Before: only Scheduler(headroom=) had it, which then made limits= and retry= errors.
    assert _async(make(limits=limits, headroom=10)).scheduler.capacity == limits.burst - 10
    assert _async(make(limits=limits)).scheduler.capacity == limits.burst - 2


@pytest.mark.parametrize("make", CONSTRUCTORS)
def test_the_scheduler_knobs_reach_the_scheduler(make: Callable[..., object]) -> None:
    limits = Limits.enterprise()
    retry = RetryPolicy(max_attempts=2)
    inner = _async(make(limits=limits, concurrency=3, retry=retry, page_size=7))
    assert inner.scheduler.limits is limits
    assert inner.scheduler.concurrency == 3
    assert inner.scheduler.retry_policy is retry
    assert inner.page_size == 7


async def test_options_as_a_typed_dict(mock: MockPortal) -> None:
    moved = "https://moved.example/rest/api/1/abc123/tasks.task.result.add"
    mock.post(
        f"{PORTAL}/rest/api/1/abc123/tasks.task.result.add",
        status=302,
        headers={"Location": moved},
    )
    mock.post(moved, payload=ok({"item": item(5)}))
    options: ClientOptions = {"scheduler": fast_scheduler(), "follow_redirects_to": "moved.example"}
    async with ResultsClient.from_webhook(WEBHOOK_URL, sender=mock.sender(), **options) as client:
        assert (await client.add(1, "x")).id == 5
    assert len(mock.sent_to(moved)) == 1


def test_a_given_sender_keeps_its_own_timeout() -> None:
    # The timeout is the built-in sender's: with another sender it would be ignored.
    with pytest.raises(InvalidInputError) as info:
        ResultsClient.from_webhook(WEBHOOK_URL, sender=AiohttpSender(), timeout=5.0)
    assert info.value.field == "timeout"
