"""The bulk engine behind :mod:`bitrix_results.bulk`, split by concern.

- ``types.py``: the public result types and :class:`BulkOptions` (a leaf).
- ``port.py``: :class:`BulkPort`, the few client operations bulk may use.
- ``gate.py``: per-task admission between sends and reconciliations.
- ``claims.py``: entries, keys, the watermark, claimed result ids, journal writes.
- ``delivery.py``: sending singles and batches, settling lost batches by reconciliation.
- ``pipeline.py``: the job: feeding units to workers, emitting outcomes and progress.
- ``read.py``: reading many tasks' results through batches of list calls.
- ``journal.py``: the SQLite journal a killed import resumes from.
- ``streams.py``: small stream helpers shared by the pipeline and the reads.
"""
