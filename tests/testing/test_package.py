"""The package's own rules: curated exports, and written from the facts, not the client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bitrix_results.testing
from bitrix_results.testing._batch import php_array, substitute_results
from bitrix_results.testing._wire import parse_php_query, parse_route

PACKAGE = Path(bitrix_results.testing.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    exported = bitrix_results.testing.__all__
    assert exported == sorted(exported)
    # ("@py_builtins" and co. appear when pytest rewrites the package as a plugin.)
    public = {n for n in vars(bitrix_results.testing) if not n.startswith(("_", "@"))}
    modules = {"config", "plugin", "portal", "server", "virtual_time"}
    assert set(exported) == public - modules


# The senders plug the fake portal into a client: they need the wire types (and, to
# act out a dropped connection or a timeout, the transport errors), none of which
# names a REST method or field. Nothing else may reach outside the package.
_ALLOWED = {
    "_mock.py": {"bitrix_results._transport.wire"},
    "_portal_sender.py": {"bitrix_results._transport.wire", "bitrix_results.errors"},
}


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_nothing_of_bitrix_results_outside_testing(module: Path) -> None:
    """A wrong field name in the client must not be mirrored here (STYLE: written from facts)."""
    allowed = _ALLOWED.get(module.name, set())
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1:
                pytest.fail(f"{module.name} imports from outside the package: {ast.dump(node)}")
            name = node.module or ""
            if node.level == 0 and name.startswith("bitrix_results"):
                assert name.startswith("bitrix_results.testing") or name in allowed, name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bitrix_results"):
                    assert alias.name.startswith("bitrix_results.testing"), alias.name


def test_php_style_query_parsing() -> None:
    parsed = parse_php_query("fields[taskId]=1&fields[text]=a%26b&ids[]=2&ids[]=3&halt=1&flag")
    assert parsed == {
        "fields": {"taskId": "1", "text": "a&b"},
        "ids": ["2", "3"],
        "halt": "1",
        "flag": "",
    }
    assert parse_php_query("a[b][c]=d") == {"a": {"b": {"c": "d"}}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/rest/1/abc/tasks.task.result.list", ("v2", "tasks.task.result.list", 1, "abc")),
        ("/rest/1/abc/tasks.task.result.list.json", ("v2", "tasks.task.result.list", 1, "abc")),
        ("/rest/api/1/abc/tasks.task.result.add", ("v3", "tasks.task.result.add", 1, "abc")),
        ("/rest/tasks.task.result.list", ("v2", "tasks.task.result.list", None, None)),
        ("/rest/api/tasks.task.result.add", ("v3", "tasks.task.result.add", None, None)),
        ("/rest/api/batch/", ("v3", "batch", None, None)),
    ],
)
def test_route_forms(path: str, expected: tuple[object, ...]) -> None:
    route = parse_route(path)
    assert route is not None
    assert (route.api, route.method, route.webhook_user, route.webhook_code) == expected


def test_php_arrays_and_result_substitution() -> None:
    assert php_array({}) == []
    assert php_array({0: "a", 1: "b"}) == ["a", "b"]
    assert php_array({0: "a", 2: "c"}) == {"0": "a", "2": "c"}
    assert php_array({"x": 1}) == {"x": 1}
    results = {"a": [{"id": 5}], "b": {"commentId": 7, "text": "x&y"}}
    query = "id=$result[a][0][id]&c=$result[b][commentId]&t=$result[b][text]&m=$result[z]"
    assert substitute_results(query, results) == "id=5&c=7&t=x%26y&m="
