"""Every citation in the code and docs leads to a heading in this repository.

Comments cite the API facts as ``api-facts`` and the product contract as
``design``, each followed by the section sign and a number (ranges like 5.6-5.8
and lists like "2.2, 3.2" continue the same document). Each number must be a
numbered heading of docs/api-facts.md or docs/design.md. The older forms, which
named documents outside the repository, and paths to those documents, fail.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"api-facts": ROOT / "docs" / "api-facts.md", "design": ROOT / "docs" / "design.md"}
TREES = ("bitrix_results", "tests", "benchmarks", "docs")
SUFFIXES = {".py", ".md"}

# Spelled out or split, so this file's own samples are not what it looks for.
S = "\u00a7"
SHARED = "../" + "shared"
OLD_DIR = "reference" + "/"
OLD_FACTS = "bitrix24-api" + "-facts.md"
# Between a document's name and the section sign: spaces, or a line break that
# continues a comment.
SEP = r"\s+(?:#:?\s+)?"
REF = r"\d+[a-z]?(?:\.\d+)*(?:-\d+(?:\.\d+)*)?"
# One citation: a document's name, then one or more sections of it. The last three
# names are the old forms, matched only to be reported.
CHAIN = re.compile(
    rf"(?<![\w-])(api-facts|design|facts|SPEC|peers){SEP}{S}"
    rf"({REF}(?:\s*(?:,|/|and|or)\s*{S}{REF})*)"
)
ONE_REF = re.compile(REF)
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
OUTSIDE = re.compile(
    r"\.\./shared|shared/(?:reference|SPEC|STYLE)|(?<![\w./-])reference/(?=bitrix24|peers|code-review|aesthetics)"
    r"|bitrix24-api-facts\.md|\bpeers\.md|\bSPEC\.md"
)


def headings(path: Path) -> set[str]:
    """The section numbers of ``path``'s numbered headings ("## 2.", "### 2.2")."""
    return set(HEADING.findall(path.read_text(encoding="utf-8")))


def problems(text: str, sections: dict[str, set[str]]) -> list[tuple[int, str]]:
    """(line, message) for every citation in ``text`` that does not resolve."""
    found: list[tuple[int, str]] = []

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    covered: set[int] = set()
    for match in CHAIN.finditer(text):
        doc = match.group(1)
        covered.update(range(match.start(), match.end()))
        if doc not in sections:
            found.append((line_of(match.start()), f"old citation form {doc!r}"))
            continue
        for ref in ONE_REF.findall(match.group(2)):
            for number in ref.split("-"):
                if number not in sections[doc]:
                    found.append((line_of(match.start()), f"{doc} {S}{number}: no such heading"))
    for offset, char in enumerate(text):
        if char == S and offset not in covered:
            found.append((line_of(offset), f"{S} without api-facts or design before it"))
    for match in OUTSIDE.finditer(text):
        found.append(
            (line_of(match.start()), f"reference outside the repository: {match.group(0)}")
        )
    return sorted(set(found))


def scanned_files() -> list[Path]:
    paths = [ROOT / "README.md"]
    for tree in TREES:
        paths += sorted(p for p in (ROOT / tree).rglob("*") if p.suffix in SUFFIXES)
    return paths


@pytest.fixture(scope="module")
def sections() -> dict[str, set[str]]:
    return {name: headings(path) for name, path in DOCS.items()}


def test_both_pages_have_numbered_sections(sections: dict[str, set[str]]) -> None:
    # The numbers the code leans on most: the limits, the guarantees, the lessons.
    assert {"1", "2.1", "2.2", "3.1", "3.2", "4.1", "5.9", "6", "7"} <= sections["api-facts"]
    assert {"1", "2", "2.3", "2.10", "3", "4", "5", "6", "7", "7.1"} <= sections["design"]


def test_every_citation_resolves(sections: dict[str, set[str]]) -> None:
    failures = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8")
        for line, message in problems(text, sections):
            failures.append(f"{path.relative_to(ROOT)}:{line}: {message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"# fine (api-facts {S}2.2, {S}3.1 and {S}5.6-5.8)", []),
        (f"# fine (design {S}2.4)", []),
        (f"# fine (api-facts\n    # {S}2.2)", []),
        (f"# x (api-facts {S}9.9)", [(1, f"api-facts {S}9.9: no such heading")]),
        (f"#\n# x (api-facts {S}2.2, {S}5.6-5.99)", [(2, f"api-facts {S}5.99: no such heading")]),
        (f"# x (facts {S}2.2)", [(1, "old citation form 'facts'")]),
        (f"# x (SPEC {S}2.4)", [(1, "old citation form 'SPEC'")]),
        (f"# x (peers {S}3a, {S}4)", [(1, "old citation form 'peers'")]),
        (f"# x ({S}7)", [(1, f"{S} without api-facts or design before it")]),
        (f"# x {SHARED}/x.md", [(1, f"reference outside the repository: {SHARED}")]),
        (
            f"x ``{OLD_DIR}{OLD_FACTS}``",
            [
                (1, f"reference outside the repository: {OLD_DIR}"),
                (1, f"reference outside the repository: {OLD_FACTS}"),
            ],
        ),
        (f"# a source path api-{OLD_DIR}tasks/ is fine", []),
    ],
)
def test_checker_catches_each_kind(text: str, expected: list[tuple[int, str]]) -> None:
    sections = {"api-facts": {"2.2", "3.1", "5.6", "5.8"}, "design": {"2.4"}}
    assert problems(text, sections) == sorted(expected)


def _rewriter() -> ModuleType:
    path = ROOT / "tools" / "rewrite_citations.py"
    spec = importlib.util.spec_from_file_location("rewrite_citations", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rewrite_script_is_idempotent_and_maps_every_form() -> None:
    rewrite = _rewriter().rewrite
    old = (
        f"# (facts {S}2.2, {S}3.2) and (SPEC {S}2.4)\n"
        f"# (facts\n#   {S}3.2) (peers {S}3a, {S}4) (peers {S}0)\n"
        f"``{OLD_DIR}{OLD_FACTS}``\n"
    )
    new = rewrite(old)
    assert new == (
        f"# (api-facts {S}2.2, {S}3.2) and (design {S}2.4)\n"
        f"# (api-facts\n#   {S}3.2) (design {S}7.2) (design {S}7.1)\n"
        "``docs/api-facts.md``\n"
    )
    assert rewrite(new) == new


def test_rewrite_script_cites_bare_section_signs_as_facts_on_request() -> None:
    prefix_bare = _rewriter().prefix_bare
    text = f"# (api-facts {S}2.2, {S}3.2) and ({S}4.2, {S}6)\n# ({S}7)\n"
    new, lines = prefix_bare(text)
    assert new == f"# (api-facts {S}2.2, {S}3.2) and (api-facts {S}4.2, {S}6)\n# (api-facts {S}7)\n"
    assert lines == [1, 2]
    assert prefix_bare(new) == (new, [])
