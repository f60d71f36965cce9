"""The bulk engine behind :mod:`bitrix_results.bulk`, split by concern.

- ``types.py``: the public result types and :class:`BulkOptions` (a leaf).
- ``port.py``: :class:`BulkPort`, the few client operations bulk may use.
- ``gate.py``: per-task admission between sends and reconciliations.
- ``claims.py``: entries, keys, the watermark, claimed result ids, journal writes.
- ``delivery.py``: :class:`Delivery`, the coordinator: sending singles and batches,
  settling a failed or lost batch.
- ``health.py``: the job's own failures (refused credentials, an unreachable portal)
  that stop it at once.
- ``reconcile.py``: finding a batch's items on the portal, matched by text and author.
- ``splitting.py``: which rows of a reconciled batch go again, and how a refused
  batch is split.
- ``pipeline.py``: the job: feeding units to workers, emitting outcomes and progress.
- ``read.py``: reading many tasks' results through batches of list calls.
- ``journal.py``: the SQLite journal a killed import resumes from.
- ``streams.py``: small stream helpers shared by the pipeline and the reads.
- ``verify.py``: the pass at the end of ``bulk_add`` that deletes doubles of ours.
"""
