"""Keyset paging of ``tasks.task.result.list`` (REST 3.0), in one place.

REST 3.0 lists carry no total and no "next" (api-facts §4.3), so a walk asks for
``id > last`` ordered by id, one page at a time. Both the client's
``iter_results`` and the bulk reads build their pages here and stop by the same
rule. Each walker owns its own :class:`PageRule`: nothing here is shared state.
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import RESULT_FIELDS

__all__ = ["TRUSTED_PAGE", "PageRule", "keyset_page", "page_query"]

# The page size the documentation's own example asks for (api-facts §5.6); a
# shorter page than this is taken as the end of a list without asking again.
TRUSTED_PAGE = 10


def keyset_page(base: Mapping[str, object], after_id: int, size: int) -> dict[str, object]:
    """``base`` (a body with a ``filter`` list) narrowed to ids above ``after_id``, by id."""
    conditions = list(base["filter"])  # type: ignore[call-overload]
    if after_id:
        conditions.append(["id", ">", after_id])
    return {
        **base,
        "filter": conditions,
        "order": {"id": "ASC"},
        "pagination": {"limit": size},
    }


def page_query(task_id: int, after_id: int, size: int) -> dict[str, object]:
    """The body of one keyset page of all of a task's results (``task_id`` already checked)."""
    # Fields named, as in every v3 list: without `select` a list may return only
    # `id` (api-facts §4.3).
    base = {"filter": [["taskId", "=", task_id]], "select": RESULT_FIELDS}
    return keyset_page(base, after_id, size)


class PageRule:
    """Whether a keyset walk should ask for another page.

    A page shorter than asked may be the end or the portal's silent cap
    (api-facts §4.3). It is the end when it is shorter than the largest page this
    rule has seen, or shorter than the pages the documentation itself asks for
    (``limit: 10``, api-facts §5.6): no portal is assumed to cap below that.
    """

    __slots__ = ("largest",)

    def __init__(self) -> None:
        #: The largest page returned so far to the walks that use this rule.
        self.largest = 0

    def more(self, returned: int, asked: int) -> bool:
        """After a page of ``returned`` results when ``asked`` were requested."""
        self.largest = max(self.largest, returned)
        return returned > 0 and returned >= min(asked, max(self.largest, TRUSTED_PAGE))
