"""One worker process of the Redis tests: adds results through a shared RedisBackend.

Run by ``test_redis_workers.py`` (and the scale-out benchmark's idea, in
miniature): ``python redis_worker.py CONFIG_JSON``. It prints one JSON object:
the outcome of every add (the text it sent, and the created result's id or the
error's class) and its scheduler's counters.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bitrix_results import Limits, RedisBackend, ResultsClient, RetryPolicy, Scheduler


async def main(config: dict[str, object]) -> dict[str, object]:
    limits = Limits(**config["limits"])  # type: ignore[arg-type]
    backend = RedisBackend.from_url(
        str(config["redis"]),
        unavailable_wait=float(config.get("unavailable_wait", 10.0)),  # type: ignore[arg-type]
    )
    scheduler = Scheduler(
        limits,
        backend=backend,
        headroom=int(config["headroom"]),  # type: ignore[call-overload]
        retry=RetryPolicy(base_delay=0.02, max_delay=0.2),
    )
    prefix = str(config["prefix"])
    count = int(config["count"])  # type: ignore[call-overload]

    async def one(client: ResultsClient, i: int) -> dict[str, object]:
        text = f"{prefix}-{i}"
        try:
            result = await client.add(1 + i % 50, text)
        except Exception as exc:
            return {"text": text, "error": type(exc).__name__}
        return {"text": text, "id": result.id}

    async with backend:
        async with ResultsClient.from_webhook(
            str(config["webhook"]), scheduler=scheduler
        ) as client:
            outcomes = await asyncio.gather(*(one(client, i) for i in range(count)))
        stats = scheduler.statistics()
    return {
        "outcomes": outcomes,
        "rate_limit_hits": stats.rate_limit_hits,
        "operating_limit_hits": stats.operating_limit_hits,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
