"""What a reconciled batch sends again, and how it is split (design §2.4).

After a reconciliation, what exists is claimed and the absent rows go again.
When only the answer was lost, they go as one batch again. When the portal
refused a command, the batch is split so the bad rows fail alone, each with its
own error, at O(log n) extra requests each, while the good rows stay batched:

- if the batch kept the prefix before the refused command (one reading of
  design §3), the reconciliation found that prefix and the refused command is
  the first row it did not find: it goes alone, the rest as one batch;
- if nothing of the batch exists (it rolled back, the other reading), the rows
  go again as two halves, and a half that is refused again is split the same
  way, down to single rows.

Planning is pure: the delivery sends the plan (singles keyed, groups batched).
"""

from __future__ import annotations

from dataclasses import dataclass

from .claims import Entry
from .reconcile import Reconciled

__all__ = ["Resend", "plan_resend"]


@dataclass(slots=True, eq=False)
class Resend:
    """The rows of a reconciled batch that go again."""

    #: Rows sent alone, as keyed singles.
    alone: list[Entry]
    #: Groups of two rows or more, each sent as one batch.
    groups: list[list[Entry]]

    def __len__(self) -> int:
        return len(self.alone) + sum(len(group) for group in self.groups)


def plan_resend(
    entries: list[Entry], found: Reconciled, *, refused: bool, last_round: bool
) -> Resend:
    """Which of ``entries`` go again after ``found``, alone or in which batches.

    ``refused``: the portal refused a command of the batch (else its answer was
    lost). ``last_round``: the batch's answer was lost too many times already;
    its absent rows go alone, where a key makes a re-send a replay.
    """
    order = {id(e): n for n, e in enumerate(entries)}
    absent = sorted(found.absent, key=lambda e: order[id(e)])
    # Sent alone, an item on a task the portal will not list gets its own error.
    alone = [entry for entry, _ in found.unreadable]
    groups: list[list[Entry]] = []
    if refused and found.settled and absent:
        # The batch kept a prefix: the first row it did not find was refused.
        alone.append(absent[0])
        groups.append(absent[1:])
    elif refused:
        half = (len(absent) + 1) // 2
        groups += [absent[:half], absent[half:]]
    elif last_round:
        alone += absent
    else:
        groups.append(absent)
    alone += [group[0] for group in groups if len(group) == 1]
    return Resend(alone, [group for group in groups if len(group) > 1])
