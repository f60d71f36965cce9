"""The job's health: failures that are the whole job's, not an item's.

Credentials the portal refuses (wrong, revoked, lacking scope), a service the
portal blocked, or a portal that could not be connected to several times in a
row stop the job at once (:class:`JobStopped`) instead of failing every item
in turn. Every request of the job reports its failure here, and every request
that reached the portal says so, which ends a run of connect failures.
"""

from __future__ import annotations

from ..errors import BitrixError, ConnectError
from .read import stops_job

__all__ = ["UNREACHABLE_AFTER", "JobHealth", "JobStopped"]

# Connect failures in a row, with no success between, after which the portal is
# taken to be unreachable and the job stops. Each one already is the scheduler's
# whole retry policy for one request.
UNREACHABLE_AFTER = 3


class JobStopped(Exception):
    """The job must stop at once for ``cause``; the work in flight is abandoned."""

    def __init__(self, cause: BitrixError) -> None:
        super().__init__(cause)
        self.cause = cause


class JobHealth:
    """Tells a job's own failures from its items', and remembers the first one."""

    def __init__(self) -> None:
        # Connect failures since the last request that reached the portal.
        self._unreachable = 0
        #: Set when the job is stopped: every unit stops before its next request.
        self.stopped: BitrixError | None = None

    def stop(self, cause: BitrixError) -> JobStopped:
        """Stop the job (the first cause stays); the exception to raise."""
        if self.stopped is None:
            self.stopped = cause
        return JobStopped(self.stopped)

    def check(self) -> None:
        """Raise :class:`JobStopped` if the job is stopped: called before each request."""
        if self.stopped is not None:
            raise JobStopped(self.stopped)

    def reached(self) -> None:
        """A request reached the portal: the run of connect failures is over."""
        self._unreachable = 0

    def failed(self, error: BitrixError) -> None:
        """Look at a request's failure: raise :class:`JobStopped` if it is the job's."""
        if stops_job(error):
            raise self.stop(error)
        if isinstance(error, ConnectError):
            self._unreachable += 1
            if self._unreachable >= UNREACHABLE_AFTER:
                unreachable = ConnectError(
                    f"portal unreachable: {self._unreachable} requests in a row could not "
                    f"connect ({error})"
                )
                if hasattr(error, "reason"):
                    # The cause (refused, DNS, TLS) of the last failure, kept.
                    setattr(unreachable, "reason", error.reason)  # noqa: B010
                unreachable.__cause__ = error
                raise self.stop(unreachable)
        else:
            # Any other answer came from the portal.
            self.reached()
