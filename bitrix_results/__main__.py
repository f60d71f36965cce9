"""The ``bitrix-results`` command and ``python -m bitrix_results``.

The command line draws with ``rich``, an optional dependency (the ``cli``
extra): the library itself does not need it. Without it the command says how
to install it instead of failing with an import traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INSTALL_HINT = "pip install 'bitrix_results[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line, or explain how to install what it needs; the exit status."""
    try:
        from .cli import main as run
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "rich":
            raise
        sys.stderr.write(
            "error: the bitrix-results command needs the 'rich' package, which is not "
            f"installed.\nInstall the command line's extra: {INSTALL_HINT}\n"
        )
        # 2, as for any other error of the command (docs/cli.md).
        return 2
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
