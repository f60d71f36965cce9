"""The portal's limits as one value the scheduler is built from."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The two limits a cloud portal enforces (api-facts §1 and §2).

    ``burst`` and ``drain_per_second`` are the leaky bucket's X and Y: a request
    is refused with 503 once more than X are outstanding, and Y drain each
    second. ``operating_limit`` seconds of execution time per method are allowed
    within ``operating_window`` seconds before that method gets 429.

    Args:
        burst: The bucket's size X: requests outstanding before a 503.
        drain_per_second: The bucket's drain Y: requests per second.
        operating_limit: Seconds of execution time per method in the window.
        operating_window: The window, in seconds.

    Raises:
        ValueError: ``burst`` is not a positive int, or another field is not a
            positive finite number.

    Example:
        ```python
        client = ResultsClient.from_webhook(url, limits=Limits.enterprise())
        ```
    """

    burst: int = 50
    drain_per_second: float = 2.0
    operating_limit: float = 480.0
    operating_window: float = 600.0

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst: must be a positive int, got {self.burst!r}")
        for name in ("drain_per_second", "operating_limit", "operating_window"):
            value = getattr(self, name)
            if not _positive_finite(value):
                raise ValueError(f"{name}: must be a positive finite number, got {value!r}")

    @classmethod
    def standard(cls) -> Limits:
        """Every plan but Enterprise: burst 50, drain 2/s (api-facts §1).

        The operating budget is 480 s per 600 s (api-facts §2.2).

        Returns:
            The limits of a standard cloud portal (the default).
        """
        return cls(burst=50, drain_per_second=2.0, operating_limit=480.0, operating_window=600.0)

    @classmethod
    def enterprise(cls) -> Limits:
        """Enterprise: burst 250, drain 5/s (api-facts §1).

        The operating budget is the same as on every plan (api-facts §2.2).

        Returns:
            The limits of an Enterprise cloud portal.
        """
        return cls(burst=250, drain_per_second=5.0, operating_limit=480.0, operating_window=600.0)

    def scaled(self, factor: float) -> Limits:
        """These limits on a portal whose clock runs ``factor`` times faster.

        Matches the fake portal's ``scale``: rates are multiplied by ``factor``,
        every time span (the window, and the budget, which is seconds of
        execution) is divided by it. The burst is a count and does not change.

        Args:
            factor: How many times faster the portal's clock runs.

        Returns:
            New limits; these are unchanged.

        Raises:
            ValueError: ``factor`` is not a positive finite number.
        """
        if not _positive_finite(factor):
            raise ValueError(f"factor: must be a positive finite number, got {factor!r}")
        return replace(
            self,
            drain_per_second=self.drain_per_second * factor,
            operating_limit=self.operating_limit / factor,
            operating_window=self.operating_window / factor,
        )


def _positive_finite(value: object) -> bool:
    """A real number > 0 and not inf or NaN (NaN compares false to everything)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0
