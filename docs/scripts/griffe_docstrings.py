"""A griffe extension that makes this project's docstrings read well in the API reference.

The code's docstrings are written for ``help()`` and editors, in reST habits. For the
site, without touching the code:

- Sphinx roles (``:class:`~bitrix_results.X```, ``:meth:`add```) become code spans;
- a paragraph ending in ``::`` (a reST literal block follows) ends in ``:``;
- private base classes are not listed;
- an instance attribute set in ``__init__`` shows its type, not the code computing it;
- an attribute documented by ``#:`` comment lines above it (dataclass fields) gets
  those lines as its docstring, as Sphinx would read them;
- a field with neither gets its entry of the class's ``Args:`` section;
- a method of the blocking client (``bitrix_results.sync.ResultsClient``) that has no
  docstring of its own borrows the async method's, with a note that it blocks, and
  ``await`` / ``async for`` / ``async with`` dropped from its examples.

mkdocs.yml loads this file through mkdocstrings' ``extensions`` option.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|mod|attr|data|exc|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
_BARE_LITERAL = re.compile(r"^::$", re.MULTILINE)
# In the examples of the async client: ``await x``, ``async for``, ``async with``.
_ASYNC = re.compile(r"\b(?:await|async)\s+(?=[\w(])")


def _short(match: re.Match[str]) -> str:
    target = match.group(1)
    if match.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _clean(text: str) -> str:
    text = _ROLE.sub(_short, text)
    text = _BARE_LITERAL.sub("", text)
    return _LITERAL.sub(":", text)


def _blocking(text: str) -> str:
    """The async method's text for its blocking twin: its examples without async/await."""
    # Only inside ``` fences (odd parts of the split): prose keeps "async iterable".
    parts = text.split("```")
    for index in range(1, len(parts), 2):
        parts[index] = _ASYNC.sub("", parts[index])
    return "```".join(parts)


class ReadableDocstrings(griffe.Extension):
    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if "instance-attribute" in attr.labels and "class-attribute" not in attr.labels:
            # Set in __init__: its value is the code that computes it, not a value.
            attr.value = None
        if attr.docstring is not None or attr.lineno is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
        except (KeyError, TypeError):
            return
        comment: list[str] = []
        index = attr.lineno - 2  # the line above the attribute, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(" ".join(comment), parent=attr)

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        # A private base (``_Wire``) tells the reader nothing they can use.
        cls.bases = [base for base in cls.bases if not str(base).split(".")[-1].startswith("_")]

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        # A dataclass documents its fields once, in the class's ``Args:``; the field
        # entries below it get the same words rather than stand there empty.
        if cls.docstring is None or "Args:" not in cls.docstring.value:
            return
        for section in cls.docstring.parse("google", warnings=False):
            if section.kind is not griffe.DocstringSectionKind.parameters:
                continue
            for param in section.value:
                member = cls.members.get(param.name)
                if isinstance(member, griffe.Attribute) and member.docstring is None:
                    member.docstring = griffe.Docstring(_clean(param.description), parent=member)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _clean(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "bitrix_results":
            return
        try:
            blocking = pkg["sync.ResultsClient"]
            source = pkg["ResultsClient"]  # the root export, wherever it is defined
        except (KeyError, griffe.AliasResolutionError):
            return
        for name, member in blocking.members.items():
            if name.startswith("_") or member.docstring is not None:
                continue
            try:
                original = source.members[name]
                text = original.docstring.value if original.docstring else None
            except (KeyError, griffe.AliasResolutionError):
                continue
            if text:
                note = "Blocking: runs the async method of the same name on the shared loop.\n\n"
                member.docstring = griffe.Docstring(note + _blocking(_clean(text)), parent=member)
