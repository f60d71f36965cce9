"""Parsing of both batch forms and their cross-command references (api-facts §3).

Only shapes live here; executing the commands (limits, rollback, billing) is the
portal's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from ._wire import (
    INVALID_SELECT,
    JSON,
    REQUEST_VALIDATION,
    ApiError,
    as_v2_int,
    parse_php_query,
    v2_error,
    v3_error,
)

# -- v3: a JSON array of {method, query} (api-facts §3.2) ------------------------------------


@dataclass(frozen=True)
class V3Command:
    method: str
    query: JSON
    alias: str | None


def parse_v3_batch(
    body: JSON, max_commands: int, *, limit_error: str = "request_validation"
) -> list[V3Command]:
    """Validate the whole batch before anything runs."""
    if isinstance(body, dict) and "cmd" in body:
        # api-facts §3.2: the v2 ``cmd`` format sent to /rest/api/batch.
        raise v3_error(INVALID_SELECT, "REST 3.0 batch expects an array of {method, query}")
    if not isinstance(body, list) or not body:
        raise v3_error(
            REQUEST_VALIDATION, "Batch body must be a non-empty array of {method, query}"
        )
    if len(body) > max_commands:
        if limit_error == "length_exceeded":
            # The other reading: the v2 system code (api-facts §3.1, §6).
            raise v2_error("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
        # api-facts §3.2: [SDK] MAX_BATCH_COMMANDS_V3 = 50; the REST docs give no error code.
        raise v3_error(
            REQUEST_VALIDATION,
            f"A batch may contain at most {max_commands} commands",
            validation=True,
        )
    commands: list[V3Command] = []
    for index, raw in enumerate(body):
        if not isinstance(raw, dict) or not isinstance(raw.get("method"), str):
            raise v3_error(
                REQUEST_VALIDATION, f"Command {index} must be {{method, query}}", field=f"{index}"
            )
        query = raw.get("query", {})
        if not isinstance(query, dict):
            raise v3_error(
                REQUEST_VALIDATION, f"Command {index}: query must be an object", field=f"{index}"
            )
        alias = raw.get("as")
        commands.append(
            V3Command(raw["method"].lower(), query, alias if isinstance(alias, str) else None)
        )
    return commands


def resolve_refs(value: JSON, aliases: Mapping[str, JSON]) -> JSON:
    """Substitute ``{"$ref": "alias.path"}`` and ``{"$refArray": "alias.field"}`` ([SDK]).

    A path walks the earlier command's ``result`` (``"t.item.id"``); through an array,
    ``$refArray`` collects the field of every element (``"l.items.id"``).
    """
    if isinstance(value, dict):
        if len(value) == 1 and "$ref" in value:
            return _walk(value["$ref"], aliases, collect=False)
        if len(value) == 1 and "$refArray" in value:
            found = _walk(value["$refArray"], aliases, collect=True)
            return found if isinstance(found, list) else [found]
        return {key: resolve_refs(item, aliases) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_refs(item, aliases) for item in value]
    return value


def _walk(ref: JSON, aliases: Mapping[str, JSON], *, collect: bool) -> JSON:
    if not isinstance(ref, str) or "." not in ref:
        raise _bad_ref(ref)
    alias, *path = ref.split(".")
    if alias not in aliases:
        raise _bad_ref(ref)
    node = aliases[alias]
    for step in path:
        if isinstance(node, list) and collect and not step.isdigit():
            node = [item.get(step) if isinstance(item, dict) else None for item in node]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            raise _bad_ref(ref)
    return node


def _bad_ref(ref: JSON) -> ApiError:
    # api-facts §3.2: [SDK] a bad reference fails with INVALIDSELECTEXCEPTION.
    return v3_error(INVALID_SELECT, f"Invalid batch reference {ref!r}")


# -- v2: {"cmd": {key: "method?query"}, "halt": 0|1} (api-facts §3.1) -------------------------


@dataclass(frozen=True)
class V2Command:
    key: str | int
    method: str
    query: str


def parse_v2_batch(params: Mapping[str, JSON], max_commands: int) -> tuple[list[V2Command], bool]:
    """The commands in order, and ``halt``."""
    cmd = params.get("cmd")
    items: list[tuple[str | int, JSON]]
    if isinstance(cmd, dict):
        items = list(cmd.items())
    elif isinstance(cmd, list):
        items = list(enumerate(cmd))
    else:
        raise v2_error("INVALID_ARG_VALUE", "Parameter cmd must be an array of commands")
    if len(items) > max_commands:
        # api-facts §3.1: more than 50 -> ERROR_BATCH_LENGTH_EXCEEDED, HTTP 400.
        raise v2_error("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
    commands = []
    for key, line in items:
        text = line if isinstance(line, str) else ""
        method, _, query = text.partition("?")
        commands.append(V2Command(key, method.strip().lower(), query))
    if any(command.method == "batch" for command in commands):
        # api-facts §3.1: nested batch is forbidden since rest 24.0.0 -> 405.
        raise v2_error(
            "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405
        )
    halt_raw = params.get("halt", 0)
    halt = halt_raw is True or as_v2_int(halt_raw) == 1 or halt_raw == "true"
    return commands, halt


_RESULT_REF = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")


def substitute_results(query: str, results: Mapping[str, JSON]) -> str:
    """api-facts §3.1 chaining: ``$result[key][field]`` and ``$result[key][0][ID]``."""

    def lookup(match: re.Match[str]) -> str:
        node: JSON = results.get(match.group(1))
        for step in re.findall(r"\[([^\]]*)\]", match.group(2)):
            if isinstance(node, dict):
                node = node.get(step)
            elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                node = None
        if node is None or isinstance(node, dict | list):
            return ""
        if isinstance(node, bool):
            return "1" if node else ""
        return quote(str(node), safe="")

    return _RESULT_REF.sub(lookup, query)


def parse_command_query(query: str) -> dict[str, JSON]:
    return parse_php_query(query)


def php_array(entries: Mapping[str | int, JSON]) -> JSON:
    """PHP's json_encode of an array: ``[]`` when empty (api-facts §3.1), a list for keys
    0..n-1 in order, otherwise an object with string keys."""
    keys = list(entries)
    if keys == list(range(len(keys))):
        return list(entries.values())
    return {str(key): value for key, value in entries.items()}
