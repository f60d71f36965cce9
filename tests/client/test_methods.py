"""Each client method: the exact URL and JSON body it sends, in both auth modes,
and the model it decodes (api-facts §4.1, §5, §7).

The ``client`` fixture runs every test twice: as a webhook
(``/rest/api/1/abc123/<method>``, no ``auth``) and as an OAuth app
(``/rest/api/<method>`` with ``"auth": <access token>`` in the JSON body).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from bitrix_results import LegacyTaskResult, ResultRights, ResultsClient, TaskResult

from ._portal import AuthMode, MockPortal, item, ok

# api-facts §5.1: the documented fields of a v3 item. Every v3 list names them in
# `select`, since without it a list may return only `id` (api-facts §4.3).
SELECT = [
    "id",
    "taskId",
    "text",
    "authorId",
    "createdAt",
    "updatedAt",
    "status",
    "fileIds",
    "rights",
    "messageId",
]

ADD = "tasks.task.result.add"
ADD_FROM_CHAT = "tasks.task.result.addfromchatmessage"
UPDATE = "tasks.task.result.update"
DELETE = "tasks.task.result.delete"
LIST = "tasks.task.result.list"
ADD_FROM_COMMENT = "tasks.task.result.addFromComment"
DELETE_FROM_COMMENT = "tasks.task.result.deleteFromComment"
CHAT_SEND = "tasks.task.chat.message.send"

MSK = timezone(timedelta(hours=3))


def only_request(mock: MockPortal, url: str) -> dict[str, object]:
    """The JSON body of the one request the client made, checking it went to ``url``."""
    sent = mock.sent()
    assert [s.url for s in sent] == [url]
    assert sent[0].method == "POST"
    assert sent[0].headers["Content-Type"] == "application/json"
    body: dict[str, object] = sent[0].json
    return body


def test_webhook_and_oauth_url_forms(mode: AuthMode) -> None:
    # The documented forms (api-facts §4.1), spelled out once so the helper is checked too.
    if mode.name == "webhook":
        assert mode.url("v3", ADD) == "https://portal.example/rest/api/1/abc123/" + ADD
        assert mode.url("v2", ADD) == "https://portal.example/rest/1/abc123/" + ADD
    else:
        assert mode.url("v3", ADD) == "https://portal.example/rest/api/" + ADD
        assert mode.url("v2", ADD) == "https://portal.example/rest/" + ADD


# -- REST 3.0 ----------------------------------------------------------------------------


async def test_add(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", ADD)
    mock.post(url, payload=ok({"item": item(7, 42, text="Done")}))

    result = await client.add(42, "Done")

    body = only_request(mock, url)
    assert body == mode.body({"fields": {"taskId": 42, "text": "Done"}})
    assert result == TaskResult(
        id=7,
        task_id=42,
        text="Done",
        author_id=1,
        created_at=datetime(2026, 11, 22, 10, 0, tzinfo=MSK),
        updated_at=None,
        status="open",
        file_ids=[],
        rights=ResultRights(edit=True, remove=False),
        message_id=None,
    )
    assert result.created_at is not None
    assert result.created_at.astimezone(UTC) == datetime(2026, 11, 22, 7, 0, tzinfo=UTC)


async def test_add_ignores_unknown_fields(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # The API grows: new fields in an item must not break decoding (STYLE, msgspec).
    mock.post(mode.url("v3", ADD), payload=ok({"item": item(7, 42, brandNew={"x": 1})}))
    assert (await client.add(42, "Done")).id == 7


async def test_add_from_chat_message(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", ADD_FROM_CHAT)
    mock.post(url, payload=ok({"item": item(8, 42, messageId=555, status="closed")}))

    result = await client.add_from_chat_message(555)

    assert only_request(mock, url) == mode.body({"fields": {"messageId": 555}})
    assert result.id == 8
    assert result.message_id == 555
    assert result.status == "closed"


async def test_update(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", UPDATE)
    edited = item(7, 42, text="New text", updatedAt="2026-11-22T11:30:00+03:00", fileIds=[3, 4])
    mock.post(url, payload=ok({"item": edited}))

    result = await client.update(7, "New text")

    assert only_request(mock, url) == mode.body({"id": 7, "fields": {"text": "New text"}})
    assert result.text == "New text"
    assert result.updated_at == datetime(2026, 11, 22, 11, 30, tzinfo=MSK)
    assert result.file_ids == [3, 4]


async def test_delete(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", DELETE)
    mock.post(url, payload=ok({"result": True}))

    assert await client.delete(7) is None

    assert only_request(mock, url) == mode.body({"id": 7})


async def test_list_minimal(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", LIST)
    mock.post(url, payload=ok({"items": [item(1), item(2)]}))

    results = await client.list(42)

    assert only_request(mock, url) == mode.body({"filter": [["taskId", "=", 42]], "select": SELECT})
    assert [r.id for r in results] == [1, 2]
    assert all(isinstance(r, TaskResult) for r in results)


async def test_list_with_every_option(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    mock.post(url, payload=ok({"items": [item(9, status="closed", authorId=3)]}))

    results = await client.list(
        42, status="closed", author_id=3, order={"createdAt": "DESC"}, limit=10, offset=20
    )

    assert only_request(mock, url) == mode.body(
        {
            "filter": [["taskId", "=", 42], ["status", "=", "closed"], ["authorId", "=", 3]],
            "select": SELECT,
            "order": {"createdAt": "DESC"},
            "pagination": {"limit": 10, "offset": 20},
        }
    )
    assert [(r.id, r.status, r.author_id) for r in results] == [(9, "closed", 3)]


async def test_list_empty(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    mock.post(mode.url("v3", LIST), payload=ok({"items": []}))
    assert await client.list(42) == []


async def test_send_chat_message(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", CHAT_SEND)
    mock.post(url, payload=ok({"result": True}))

    # The portal returns no message id for this method (api-facts §5.9).
    assert await client.send_chat_message(42, "Hello") is None

    assert only_request(mock, url) == mode.body({"fields": {"taskId": 42, "text": "Hello"}})


async def test_call_v3(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", "tasks.task.get")
    mock.post(url, payload=ok({"item": {"id": 42, "title": "T"}}))

    result = await client.call("tasks.task.get", {"id": 42, "select": ["id", "title"]})

    assert only_request(mock, url) == mode.body({"id": 42, "select": ["id", "title"]})
    assert result == {"item": {"id": 42, "title": "T"}}


async def test_call_without_params(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", "rest.scope.list")
    mock.post(url, payload=ok({"items": []}))

    assert await client.call("rest.scope.list") == {"items": []}

    assert only_request(mock, url) == mode.body({})


async def test_call_v2(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v2", "tasks.task.get")
    mock.post(url, payload=ok({"task": {"id": "42"}}))

    result = await client.call("tasks.task.get", {"taskId": 42}, api="v2")

    assert only_request(mock, url) == mode.body({"taskId": 42})
    assert result == {"task": {"id": "42"}}


# -- REST v2 -----------------------------------------------------------------------------

# A v2 item as the docs show it (api-facts §5.1 "v2 item"); v2 sends numbers as strings.
V2_ITEM = {
    "id": "3",
    "taskId": "42",
    "commentId": "100",
    "createdBy": "1",
    "createdAt": "2026-11-22T10:00:00+03:00",
    "updatedAt": "2026-11-22T10:00:00+03:00",
    "status": "1",
    "text": "Done",
    "formattedText": "<b>Done</b>",
    "files": ["5", 6],
}


async def test_list_legacy(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v2", LIST)
    mock.post(url, payload=ok([V2_ITEM, {**V2_ITEM, "id": 4, "status": 0, "files": []}]))

    results = await client.list_legacy(42)

    assert only_request(mock, url) == mode.body({"taskId": 42})
    assert results == [
        LegacyTaskResult(
            id=3,
            task_id=42,
            comment_id=100,
            created_by=1,
            created_at="2026-11-22T10:00:00+03:00",
            updated_at="2026-11-22T10:00:00+03:00",
            status=1,
            text="Done",
            formatted_text="<b>Done</b>",
            files=[5, 6],
        ),
        LegacyTaskResult(
            id=4,
            task_id=42,
            comment_id=100,
            created_by=1,
            created_at="2026-11-22T10:00:00+03:00",
            updated_at="2026-11-22T10:00:00+03:00",
            status=0,
            text="Done",
            formatted_text="<b>Done</b>",
            files=[],
        ),
    ]
    assert results[0].is_closed
    assert not results[1].is_closed


async def test_list_legacy_new_task_card(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # With the new task card, v2 list returns every result with commentId 0 (api-facts §5).
    mock.post(mode.url("v2", LIST), payload=ok([{**V2_ITEM, "commentId": 0}]))
    [result] = await client.list_legacy(42)
    assert result.comment_id == 0


async def test_add_from_comment(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v2", ADD_FROM_COMMENT)
    # The addFromComment answer carries ``files: null`` (api-facts §5.7).
    mock.post(url, payload=ok({**V2_ITEM, "status": "0", "files": None}))

    result = await client.add_from_comment(100)

    assert only_request(mock, url) == mode.body({"commentId": 100})
    assert isinstance(result, LegacyTaskResult)
    assert (result.id, result.task_id, result.comment_id) == (3, 42, 100)
    assert result.files is None
    assert not result.is_closed


async def test_delete_from_comment(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v2", DELETE_FROM_COMMENT)
    mock.post(url, payload=ok(None))

    assert await client.delete_from_comment(100) is None

    assert only_request(mock, url) == mode.body({"commentId": 100})


# -- iter_results: keyset pagination (api-facts §4.3) ---------------------------------------


def pages(mock: MockPortal, url: str, *page_ids: list[int]) -> None:
    """Answer successive list calls with one page each."""
    for ids in page_ids:
        mock.post(url, payload=ok({"items": [item(i) for i in ids]}))


def page_filters(mock: MockPortal, url: str) -> list[object]:
    return [s.json["filter"] for s in mock.sent_to(url)]


async def test_iter_results_keyset_walk(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, [1, 2], [3, 4], [5])

    ids = [r.id async for r in client.iter_results(42, page_size=2)]

    assert ids == [1, 2, 3, 4, 5]
    bodies = [s.json for s in mock.sent_to(url)]
    assert bodies == [
        mode.body(
            {
                "filter": [["taskId", "=", 42]],
                "select": SELECT,
                "order": {"id": "ASC"},
                "pagination": {"limit": 2},
            }
        ),
        mode.body(
            {
                "filter": [["taskId", "=", 42], ["id", ">", 2]],
                "select": SELECT,
                "order": {"id": "ASC"},
                "pagination": {"limit": 2},
            }
        ),
        mode.body(
            {
                "filter": [["taskId", "=", 42], ["id", ">", 4]],
                "select": SELECT,
                "order": {"id": "ASC"},
                "pagination": {"limit": 2},
            }
        ),
    ]


async def test_iter_results_filters_and_start(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    # A first page of 12 when 20 were asked may be the portal's cap, so one more
    # page is asked for; the empty page ends the walk.
    first = list(range(11, 23))
    pages(mock, url, first, [])

    ids = [
        r.id
        async for r in client.iter_results(
            42, status="open", author_id=3, after_id=10, page_size=20
        )
    ]

    assert ids == first
    base = [["taskId", "=", 42], ["status", "=", "open"], ["authorId", "=", 3]]
    assert page_filters(mock, url) == [[*base, ["id", ">", 10]], [*base, ["id", ">", 22]]]


async def test_iter_results_a_page_below_the_documented_size_ends_the_walk(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # The docs' own example asks for pages of 10 (api-facts §5.6): no portal is
    # assumed to cap below that, so a page of 1 is the end, with no extra request.
    url = mode.url("v3", LIST)
    pages(mock, url, [11])
    assert [r.id async for r in client.iter_results(42)] == [11]
    assert len(mock.sent_to(url)) == 1


async def test_iter_results_default_page_size(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, [1])
    assert [r.id async for r in client.iter_results(42)] == [1]
    sent = mock.sent_to(url)
    assert [s.json["pagination"] for s in sent] == [{"limit": client.page_size}]


async def test_iter_results_stops_on_empty_page(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, [1, 2], [3, 4], [])

    ids = [r.id async for r in client.iter_results(42, page_size=2)]

    assert ids == [1, 2, 3, 4]
    assert len(mock.sent_to(url)) == 3


async def test_iter_results_empty_task(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, [])
    assert [r async for r in client.iter_results(42)] == []
    assert len(mock.sent_to(url)) == 1


async def test_iter_results_stops_on_short_page(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, [1, 2, 3], [4])
    # A third page is not registered: asking for it would fail the walk.

    ids = [r.id async for r in client.iter_results(42, page_size=3)]

    assert ids == [1, 2, 3, 4]
    assert len(mock.sent_to(url)) == 2


async def test_iter_results_portal_caps_pages(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # Some v3 lists silently cap a page below the requested limit (api-facts §4.3): a
    # page of 12 when 20 were asked for is not the end; a page shorter than 12 is.
    url = mode.url("v3", LIST)
    pages(mock, url, list(range(1, 13)), list(range(13, 25)), [25, 26])

    ids = [r.id async for r in client.iter_results(42, page_size=20)]

    assert ids == list(range(1, 27))
    assert page_filters(mock, url) == [
        [["taskId", "=", 42]],
        [["taskId", "=", 42], ["id", ">", 12]],
        [["taskId", "=", 42], ["id", ">", 24]],
    ]


async def test_iter_results_capped_portal_ending_on_full_page(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", LIST)
    pages(mock, url, list(range(1, 13)), list(range(13, 25)), [])
    ids = [r.id async for r in client.iter_results(42, page_size=20)]
    assert ids == list(range(1, 25))
    assert len(mock.sent_to(url)) == 3


async def test_iter_results_portal_ignoring_keyset_does_not_loop(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # A portal that ignores the ``id >`` filter returns the first page forever.
    url = mode.url("v3", LIST)
    mock.post(url, payload=ok({"items": [item(1), item(2)]}), repeat=True)

    ids = [r.id async for r in client.iter_results(42, page_size=2)]

    assert len(mock.sent_to(url)) <= 2
    assert set(ids) == {1, 2}


async def test_iter_results_portal_ignoring_keyset_yields_each_result_once(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    """BUG (reported): the repeated page is yielded again before the walk stops.

    ``iter_results`` yields a page before checking that it moved past ``last``,
    so a portal that ignores the keyset filter makes it yield 1, 2, 1, 2.
    """
    url = mode.url("v3", LIST)
    mock.post(url, payload=ok({"items": [item(1), item(2)]}), repeat=True)

    ids = [r.id async for r in client.iter_results(42, page_size=2)]

    assert ids == [1, 2]


async def test_iter_results_overlapping_page_yields_only_new_results(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    """BUG (reported): same cause; a page that repeats some old ids repeats them."""
    url = mode.url("v3", LIST)
    pages(mock, url, [1, 2], [2, 3], [])

    ids = [r.id async for r in client.iter_results(42, page_size=2)]

    assert ids == [1, 2, 3]
