"""Rewrite citations of documents outside the repository to the pages inside it.

    python tools/rewrite_citations.py          # rewrite in place
    python tools/rewrite_citations.py --check  # list what would change, exit 1 if any
    python tools/rewrite_citations.py --bare-is-facts  # also "(§5.6)" -> "(api-facts §5.6)"

Early comments cited three documents that never lived in this repository. Their
content is now in ``docs/``, with the same section numbers:

- ``facts §N`` (the Bitrix24 API facts)        -> ``api-facts §N`` (docs/api-facts.md)
- ``SPEC §N`` (the product specification)     -> ``design §N``    (docs/design.md)
- ``peers §N`` (the study of other clients)   -> ``design §7.K``  (docs/design.md,
  "Lessons from other clients"; the section numbers differ, see ``PEERS``)

The rewrite only touches those words and the citation numbers after them, so it
changes comments and docstrings, never behaviour. It is idempotent: the new forms
never match the old patterns, so running it again after a merge only rewrites
what the merge brought in. ``tests/test_citations.py`` checks the result.

A bare section sign with no document before it is left alone unless
``--bare-is-facts`` is given; it then becomes an ``api-facts`` citation (in .py
files only), and each such line is printed for review. The new names are longer
than the old, so lines pushed past 100 characters are printed too.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("bitrix_results", "tests", "benchmarks", "docs")
FILES = ("README.md",)
SUFFIXES = {".py", ".md"}
MAX_LINE = 100  # ruff's line-length in pyproject.toml

SECTION = "\u00a7"  # the section sign, spelled out so this file is not a citation itself

#: Section of the peer study -> subsection of design.md "7. Lessons from other clients".
PEERS = {
    "0": "7.1",  # what ``operating`` means; batches reporting it per command
    "3a": "7.2",  # backoff of the official JS SDK
    "4": "7.2",  # backoff of the other Python clients
}

# Between the document's name and the section sign: spaces, or a line break that
# continues a comment ("(facts\n    # §3.2)").
_SEP = r"(\s+(?:#:?\s+)?)"
_REF = r"\d+[a-z]?(?:\.\d+)*(?:-\d+(?:\.\d+)*)?"
_FACTS = re.compile(r"(?<![\w-])facts" + _SEP + SECTION + r"(?=\d)")
_SPEC = re.compile(r"\bSPEC" + _SEP + SECTION + r"(?=\d)")
_PEERS = re.compile(
    r"\bpeers" + _SEP + SECTION + rf"({_REF}(?:\s*(?:,|/|and|or)\s*{SECTION}{_REF})*)"
)
_PEER_REF = re.compile(_REF)
_OLD_PATHS = (("reference/bitrix24-api-facts.md", "docs/api-facts.md"),)


class UnmappedError(Exception):
    """A ``peers`` section with no entry in ``PEERS``."""


def _peers(match: re.Match[str]) -> str:
    targets: list[str] = []
    for ref in _PEER_REF.findall(match.group(2)):
        if ref not in PEERS:
            raise UnmappedError(ref)
        if PEERS[ref] not in targets:
            targets.append(PEERS[ref])
    return "design" + match.group(1) + ", ".join(SECTION + t for t in targets)


def rewrite(text: str) -> str:
    """``text`` with every old citation in its new form (unchanged if none)."""
    text = _FACTS.sub(lambda m: "api-facts" + m.group(1) + SECTION, text)
    text = _SPEC.sub(lambda m: "design" + m.group(1) + SECTION, text)
    text = _PEERS.sub(_peers, text)
    for old, new in _OLD_PATHS:
        text = text.replace(old, new)
    return text


# A citation already in the new form, with the sections that continue it
# ("api-facts §4.2, §6"): the section signs it covers are not bare.
_NEW_CHAIN = re.compile(
    r"(?<![\w-])(?:api-facts|design)"
    + _SEP
    + SECTION
    + rf"{_REF}(?:\s*(?:,|/|and|or)\s*{SECTION}{_REF})*"
)


def prefix_bare(text: str) -> tuple[str, list[int]]:
    """Put ``api-facts`` before every section sign that no document name covers.

    Early comments also cited the facts with a bare section sign ("(§5.6)"); in
    this package every such citation meant the API facts. Returns the new text
    and the line numbers touched, for a human to read over.
    """
    lines: list[int] = []
    while True:
        covered: set[int] = set()
        for match in _NEW_CHAIN.finditer(text):
            covered.update(range(match.start(), match.end()))
        bare = next(
            (
                i
                for i, char in enumerate(text)
                if char == SECTION and i not in covered and text[i + 1 : i + 2].isdigit()
            ),
            None,
        )
        if bare is None:
            return text, lines
        lines.append(text.count("\n", 0, bare) + 1)
        text = text[:bare] + "api-facts " + text[bare:]


def _grown_too_long(old: str, new: str) -> list[int]:
    """Line numbers (from 1) that the rewrite pushed past the project's line length."""
    before = {line for line in old.splitlines() if len(line) > MAX_LINE}
    return [
        number
        for number, line in enumerate(new.splitlines(), start=1)
        if len(line) > MAX_LINE and line not in before
    ]


def files(root: Path = ROOT) -> list[Path]:
    """Every .py and .md file the citations may live in."""
    found = [root / name for name in FILES if (root / name).is_file()]
    for tree in TREES:
        found += sorted(p for p in (root / tree).rglob("*") if p.suffix in SUFFIXES)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    parser.add_argument(
        "--bare-is-facts",
        action="store_true",
        help="also cite a bare section sign (no document before it) as api-facts; review the lines",
    )
    args = parser.parse_args(argv)
    changed = 0
    failed = 0
    for path in files():
        text = path.read_text(encoding="utf-8")
        try:
            new = rewrite(text)
        except UnmappedError as exc:
            print(f"{path.relative_to(ROOT)}: peers section {exc} has no mapping", file=sys.stderr)
            failed += 1
            continue
        bare: list[int] = []
        if args.bare_is_facts and path.suffix == ".py":
            new, bare = prefix_bare(new)
        if new != text:
            changed += 1
            print(path.relative_to(ROOT))
            for number in sorted(set(bare)):
                print(f"  line {number}: a bare section sign now cites api-facts: check it")
            for number in _grown_too_long(text, new):
                # The new names are longer; ruff's E501 would stop ``make test``.
                print(f"  line {number} is now over {MAX_LINE} characters: rewrap it")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if failed:
        return 2
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
