"""The ``Idempotency-Key`` store of REST 3.0 writes (api-facts §4.1)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


def is_valid_key(key: str) -> bool:
    """api-facts §4.1: 1-255 printable ASCII characters."""
    return 1 <= len(key) <= 255 and all(" " <= ch <= "~" for ch in key)


@dataclass(frozen=True)
class StoredResponse:
    """A successful answer, kept byte for byte, and what request body it answered."""

    fingerprint: bytes
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    expires_at: float


class IdempotencyStore:
    """Successful responses per (credential, user, method, key) for a fixed TTL.

    The TTL is the same for every entry, so entries expire in insertion order and a
    FIFO of keys purges them in O(1) amortised (a million-item import stays bounded).
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, StoredResponse] = {}
        self._order: deque[tuple[float, Hashable]] = deque()

    def _purge(self, now: float) -> None:
        while self._order and self._order[0][0] <= now:
            _expires_at, key = self._order.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at <= now:
                del self._entries[key]

    def get(self, key: Hashable, now: float) -> StoredResponse | None:
        self._purge(now)
        return self._entries.get(key)

    def put(self, key: Hashable, entry: StoredResponse) -> None:
        self._entries[key] = entry
        self._order.append((entry.expires_at, key))

    def __len__(self) -> int:
        return len(self._entries)
