"""``bitrix-results``: the command line (the code is in ``bitrix_results._cli``)."""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]
