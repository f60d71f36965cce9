"""``python -m bitrix_results``: the same as the ``bitrix-results`` command."""

from .cli import main

raise SystemExit(main())
