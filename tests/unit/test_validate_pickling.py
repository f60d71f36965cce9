"""Every public error survives pickling (multiprocessing sends errors between processes).

Before: the default ``BaseException`` pickling rebuilt an error as
``cls(*args)``, with ``args`` holding the formatted message, so
``pickle.loads(pickle.dumps(InvalidInputError("f", "m")))`` raised TypeError.
"""

from __future__ import annotations

import pickle

import pytest

import bitrix_results
import bitrix_results.errors as errors
from bitrix_results.bulk import BulkReport
from bitrix_results.errors import BitrixError
from bitrix_results.models import ValidationDetail


def _report() -> BulkReport:
    from bitrix_results._scheduler import Limits, Scheduler

    return BulkReport(
        outcomes=[],
        created=2,
        failed=1,
        elapsed=0.5,
        mode="batch",
        statistics=Scheduler(Limits.standard()).statistics(),
        job_id="job-1",
    )


def _sample(cls: type[BitrixError]) -> BitrixError:
    """An instance of ``cls`` built the way the library builds it, every argument set."""
    if issubclass(cls, errors.PortalError):
        return cls(
            "Access denied.",
            code="SOME_CODE",
            status=403,
            method="tasks.task.result.add",
            validation=(ValidationDetail("must not be empty", "text"),),
        )
    if cls is errors.InvalidInputError:
        return cls("task_id", "must be a positive int, got -1")
    if issubclass(cls, errors.TransportError):
        return cls("connection refused", method="tasks.task.result.list")
    if cls is errors.DecodeError:
        return cls("the body is not a JSON API response", method="batch", status=502)
    if cls is errors.OutcomeUnknownError:
        return cls("tasks.task.result.addFromComment", errors.ServerError("x", code="", status=500))
    if cls is errors.BulkAbortedError:
        return cls(_report(), errors.ConnectError("refused"))
    if cls is errors.JournalError:
        return cls("/data/import.journal", "was written for another portal", field="portal")
    if cls is errors.LimiterUnavailableError:
        return cls(errors.ConnectError("redis refused"), waited=10.0)
    if cls is errors.OAuthError:
        return cls("invalid_grant", "the refresh token expired")
    return cls("something failed")


def _subclasses(cls: type[BitrixError]) -> set[type[BitrixError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


# Every public error class, wherever it is defined: a class added later is covered
# without editing this file.
PUBLIC_ERRORS = sorted(
    (cls for cls in _subclasses(BitrixError) if not cls.__name__.startswith("_")),
    key=lambda cls: cls.__name__,
)


def test_every_public_error_class_is_covered() -> None:
    exported = {
        value
        for name in bitrix_results.__all__
        if isinstance(value := getattr(bitrix_results, name), type)
        and issubclass(value, BitrixError)
    }
    assert exported <= set(PUBLIC_ERRORS)
    assert errors.ExpiredTokenError in PUBLIC_ERRORS


def _same(before: BaseException, after: BaseException) -> None:
    assert type(after) is type(before)
    assert str(after) == str(before)
    assert after.args == before.args
    assert set(vars(after)) == set(vars(before))
    for name, value in vars(before).items():
        restored = vars(after)[name]
        if isinstance(value, BaseException):
            # Exceptions do not compare by value: compare what they say.
            assert type(restored) is type(value)
            assert str(restored) == str(value)
        else:
            # A BulkReport compares as a dataclass, its statistics snapshot included.
            assert restored == value, name


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_public_error_pickles_equal(cls: type[BitrixError], protocol: int) -> None:
    error = _sample(cls)
    error.add_note("while importing row 12")

    restored = pickle.loads(pickle.dumps(error, protocol=protocol))

    _same(error, restored)
    assert restored.__notes__ == ["while importing row 12"]


def test_invalid_input_error_round_trip_from_the_issue() -> None:
    restored = pickle.loads(pickle.dumps(errors.InvalidInputError("f", "m")))
    assert isinstance(restored, ValueError)
    assert (restored.field, restored.message, str(restored)) == ("f", "m", "f: m")


def test_instance_attributes_set_after_construction_survive() -> None:
    # The transport stamps auth_generation on an ExpiredTokenError after building it.
    error = errors.portal_error(code="expired_token", message="expired", status=401)
    assert isinstance(error, errors.ExpiredTokenError)
    error.auth_generation = 3
    restored = pickle.loads(pickle.dumps(error))
    assert restored.auth_generation == 3
    assert restored.code == "expired_token"
