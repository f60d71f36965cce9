"""Fenced code blocks of the README and docs/, with the directive written above each.

A block is run by tests/docs/test_examples.py according to the HTML comment on the
line just before its fence (blank lines between are allowed):

- none: ``python`` runs as a script, ``sh`` with bash, in the page's working directory;
- ``<!-- not-run: REASON -->``: not run; the reason is required;
- ``<!-- run: pytest -->``: a test module, run by pytest in asyncio *strict* mode;
- ``<!-- run: notebook -->``: a notebook cell: runs inside a running event loop,
  top-level ``await`` allowed, one namespace for all the notebook cells of the page;
- ``<!-- run: save-as NAME -->``: written to NAME in the working directory, for a later
  block of the same page to use (which must mention NAME);
- ``<!-- run: needs-redis -->``: like none, with a redis-server running (REDIS_URL);
  skipped where redis-server is not installed.

``text`` blocks show output and are not code. A block with any other language, or
none, must be marked ``not-run``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = frozenset({"python", "sh"})
OUTPUT = frozenset({"text"})
MODES = frozenset({"script", "pytest", "notebook", "save-as", "needs-redis"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<kind>run|not-run)\s*:\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str  # "run" or "not-run"
    mode: str  # one of MODES (run) or "" (not-run)
    arg: str  # the file name of save-as, the reason of not-run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # the closing fence
        kind, mode, arg = "run", "script", ""
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        directive = _DIRECTIVE.match(lines[above]) if above >= 0 else None
        if directive:
            kind = directive["kind"]
            if kind == "not-run":
                mode, arg = "", directive["arg"]
            else:
                mode, _, arg = directive["arg"].partition(" ")
                arg = arg.strip()
        found.append(Block(path, start + 1, lang.lower(), "\n".join(body) + "\n", kind, mode, arg))
    return found


def problems(block: Block) -> list[str]:
    """Why a block breaks the rules above, if it does."""
    out: list[str] = []
    if block.kind == "not-run":
        if len(block.arg.split()) < 3:
            out.append(f"{block.where}: not-run needs a reason of a few words")
        return out
    if block.lang in OUTPUT:
        return out
    if block.lang not in RUNNABLE:
        out.append(
            f"{block.where}: a {block.lang or 'plain'!s} block must be python, sh or text, "
            "or be marked <!-- not-run: reason -->"
        )
    if block.mode not in MODES:
        out.append(f"{block.where}: unknown run mode {block.mode!r}")
    if block.mode == "save-as" and not re.fullmatch(r"[\w.-]+", block.arg):
        out.append(f"{block.where}: save-as needs a plain file name")
    if block.mode in ("pytest", "notebook") and block.lang != "python":
        out.append(f"{block.where}: {block.mode} blocks are python")
    return out
