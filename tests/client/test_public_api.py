"""The public API is pinned: a curated, sorted ``__all__`` that is exactly what the
package exposes, every name of it documented; each public module's ``__all__``
is its promise (docs/reference/index.md), and the private modules' lists are kept true."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest

import bitrix_results
import bitrix_results.errors
import bitrix_results.sync

from ._portal import MockPortal, item, ok, webhook_client

ROOT = Path(__file__).parents[2]
PUBLIC_MODULES = [
    "bitrix_results.bulk",
    "bitrix_results.client",
    "bitrix_results.errors",
    "bitrix_results.models",
    "bitrix_results.sync",
    "bitrix_results.testing",
]


def test_all_is_sorted_and_unique() -> None:
    names = list(bitrix_results.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_all_is_exactly_the_public_names() -> None:
    # Nothing exported by accident, nothing listed and missing (httpx pins the same).
    # Submodules are reached as modules (bitrix_results.sync), not through __all__.
    public = {
        name
        for name, value in vars(bitrix_results).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(bitrix_results.__all__) == public | {"__version__"}


def test_every_public_name_resolves() -> None:
    for name in bitrix_results.__all__:
        assert getattr(bitrix_results, name) is not None, name


def test_no_private_name_is_public() -> None:
    assert [n for n in bitrix_results.__all__ if n.startswith("_") and n != "__version__"] == []


def _reference() -> str:
    return (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [n for n in bitrix_results.__all__ if n != "__version__"])
def test_every_public_name_is_documented(name: str) -> None:
    value = getattr(bitrix_results, name)
    assert inspect.getdoc(value), f"{name} has no docstring"
    if inspect.isclass(value):
        # Its own docstring, not one inherited from a base class.
        assert value.__doc__, f"{name} has no docstring of its own"
    assert re.search(rf"`{name}\b", _reference()), f"{name} is not in docs/reference/index.md"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_each_public_module_owns_a_true_all(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert len(names) == len(set(names)), module
    for name in names:
        value = getattr(mod, name)  # every listed name exists
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module}.{name} has no docstring"


@pytest.mark.parametrize("module", PUBLIC_MODULES[1:4])
def test_what_the_root_reexports_from_a_public_module_is_in_its_all(module: str) -> None:
    mod = importlib.import_module(module)
    from_here = {
        name
        for name in bitrix_results.__all__
        if getattr(getattr(bitrix_results, name), "__module__", None) == module
    }
    assert from_here <= set(mod.__all__)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in bitrix_results.__all__
        if isinstance(getattr(bitrix_results, n), type(msgspec.Struct))
    ],
)
def test_public_structs_keep_their_home_module(name: str) -> None:
    # No httpx-style ``__module__ = "bitrix_results"`` rewrite: msgspec resolves a
    # Struct's string annotations in the module ``__module__`` names, so after the
    # rewrite a decoder built later (TaskResult's ``datetime``) fails.
    cls = getattr(bitrix_results, name)
    assert cls.__module__.startswith("bitrix_results.")
    assert msgspec.json.Decoder(list[cls]) is not None


def test_the_client_options_are_public_from_the_client_module() -> None:
    from bitrix_results.client import ClientOptions

    assert ClientOptions is bitrix_results.ClientOptions
    assert "ClientOptions" in bitrix_results.client.__all__


def _top_level_public_names(path: Path) -> set[str]:
    """Functions, classes and constants a module defines at its top level, no underscore."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize(
    "module",
    ["bitrix_results._validate", "bitrix_results._transport.urls", "bitrix_results._options"],
)
def test_private_modules_list_what_other_modules_use(module: str) -> None:
    # Before: _validate.__all__ left out key and choice, urls.__all__ METHOD_NAME and
    # check_origin, all of which client.py uses.
    mod = importlib.import_module(module)
    assert mod.__file__ is not None
    assert _top_level_public_names(Path(mod.__file__)) == set(mod.__all__)


def test_every_error_is_public() -> None:
    # The whole tree of errors.py is reachable from the package root (STYLE "Errors are API").
    errors = {n for n in bitrix_results.errors.__all__ if n[0].isupper()}
    assert errors <= set(bitrix_results.__all__)
    for name in errors:
        cls = getattr(bitrix_results, name)
        assert cls is getattr(bitrix_results.errors, name)
        assert issubclass(cls, bitrix_results.BitrixError)


def test_input_errors_are_value_errors() -> None:
    assert issubclass(bitrix_results.InvalidInputError, ValueError)


def test_sync_module_exports_the_client() -> None:
    assert bitrix_results.sync.__all__ == ["ResultsClient"]
    assert bitrix_results.sync.ResultsClient is not bitrix_results.ResultsClient


def test_version() -> None:
    assert isinstance(bitrix_results.__version__, str)
    assert bitrix_results.__version__.count(".") >= 1


def test_scheduler_and_backends_are_public() -> None:
    # docs/rate-limits.md builds a shared Redis scheduler from these top-level names.
    from bitrix_results import MemoryBackend, RedisBackend, Scheduler
    from bitrix_results import _scheduler as private

    assert Scheduler is private.Scheduler
    assert MemoryBackend is private.MemoryBackend
    assert RedisBackend is private.RedisBackend
    assert {"Scheduler", "MemoryBackend", "RedisBackend"} <= set(bitrix_results.__all__)
    scheduler = Scheduler(bitrix_results.Limits.standard(), backend=MemoryBackend())
    assert scheduler is not None


def test_rate_limits_doc_imports_only_public_names() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "rate-limits.md").read_text(encoding="utf-8")
    assert "bitrix_results._" not in doc
    assert "from bitrix_results import Limits, RedisBackend, ResultsClient, Scheduler" in doc


# -- follow_redirects_to: one host or several -------------------------------------------

OLD = "https://a.bitrix24.com"
MOVED = "https://portal.example.org"


def _add_url(origin: str) -> str:
    return f"{origin}/rest/api/1/abc123/tasks.task.result.add"


@pytest.mark.parametrize(
    "allowed",
    [
        pytest.param("portal.example.org", id="one-string"),
        pytest.param("Portal.Example.ORG", id="case"),
        pytest.param(["portal.example.org"], id="list"),
        pytest.param(("other.example", "portal.example.org"), id="tuple"),
        pytest.param(frozenset({"portal.example.org"}), id="set"),
        pytest.param("https://portal.example.org", id="url"),
    ],
)
async def test_follow_redirects_to_one_string_is_one_host(
    mock: MockPortal, allowed: str | Iterable[str]
) -> None:
    mock.post(_add_url(OLD), status=302, headers={"Location": _add_url(MOVED)})
    mock.post(_add_url(MOVED), payload=ok({"item": item(7)}))
    async with webhook_client(url=f"{OLD}/rest/1/abc123/", follow_redirects_to=allowed) as client:
        assert (await client.add(42, "Done")).id == 7
    assert len(mock.sent_to(_add_url(MOVED))) == 1


async def test_follow_redirects_to_a_string_does_not_allow_its_letters(
    mock: MockPortal,
) -> None:
    # Before: "portal.example.org" was read as the hosts "p", "o", "r", ...
    mock.post(_add_url(OLD), status=302, headers={"Location": "https://o/x"}, repeat=True)
    async with webhook_client(
        url=f"{OLD}/rest/1/abc123/", follow_redirects_to="portal.example.org"
    ) as client:
        with pytest.raises(bitrix_results.RedirectRefusedError):
            await client.add(42, "Done")
    assert mock.sent_to("https://o/x") == []


@pytest.mark.parametrize("allowed", ["", "  ", [""], [42], None, 42])
def test_follow_redirects_to_rejects_non_hosts(mock: MockPortal, allowed: object) -> None:
    with pytest.raises(bitrix_results.InvalidInputError) as info:
        webhook_client(url=f"{OLD}/rest/1/abc123/", follow_redirects_to=allowed)
    assert info.value.field == "follow_redirects_to"
