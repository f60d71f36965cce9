"""``bitrix-results``: the command line, a thin shell over the public API.

The webhook comes from ``--webhook`` or ``BITRIX_WEBHOOK_URL`` and is never
printed: it holds the webhook's secret code.

- ``app.py``: ``main``, the import command's wiring, Ctrl-C and a closed pipe;
- ``parser.py``: options and sub-commands;
- ``exits.py``: exit statuses and the message for each error;
- ``commands.py``: add, update, delete, list, export, demo, emulator;
- ``importing.py``: the import: default journal, probe, progress bar, resume hint;
- ``rows.py``: reading JSONL and CSV rows;
- ``report.py``: the summary (table, JSON) and the failures file;
- ``console.py``: stdout/stderr consoles and ``-v`` logging.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
