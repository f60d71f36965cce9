"""Checked by mypy (``tests/client/test_options.py``), never run.

Each ``type: ignore[...]`` below must be needed: mypy --strict warns about an
unused one, so if a misspelt or mistyped option stopped being an error, the
check would fail. The calls without one must type-check as they are.
"""

from __future__ import annotations

from bitrix_results import ClientOptions, Limits, ResultsClient, RetryPolicy, Scheduler, sync

URL = "https://portal.example/rest/1/abc123/"


def accepted() -> None:
    ResultsClient.from_webhook(URL, limits=Limits.standard(), concurrency=4, headroom=3)
    ResultsClient.from_webhook(URL, scheduler=Scheduler(Limits.standard()), timeout=10)
    ResultsClient.from_webhook(URL, retry=RetryPolicy(), follow_redirects_to="other.example")
    sync.ResultsClient.from_webhook(URL, timeout=5.0, page_size=20)
    sync.ResultsClient.from_oauth(
        portal="https://portal.example",
        access_token="a",
        refresh_token="r",
        client_id="c",
        client_secret="s",
        concurrency=2,
    )
    options: ClientOptions = {"limits": Limits.enterprise(), "headroom": 4}
    ResultsClient.from_webhook(URL, **options)
    sync.ResultsClient.from_webhook(URL, **options)


def refused() -> None:
    ResultsClient.from_webhook(URL, timout=5)  # type: ignore[call-arg]
    sync.ResultsClient.from_webhook(URL, timout=5)  # type: ignore[call-arg]
    sync.ResultsClient.from_webhook(URL, concurency=4)  # type: ignore[call-arg]
    sync.ResultsClient.from_webhook(URL, timeout="x")  # type: ignore[arg-type]
    sync.ResultsClient.from_webhook(URL, limits=Limits)  # type: ignore[arg-type]
    sync.ResultsClient.from_oauth(  # type: ignore[call-arg]
        portal="https://portal.example",
        access_token="a",
        refresh_token="r",
        client_id="c",
        client_secret="s",
        retries=3,
    )
    bad: ClientOptions = {"timout": 5}  # type: ignore[typeddict-unknown-key]
    del bad
