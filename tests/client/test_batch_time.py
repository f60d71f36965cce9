"""REST v2 batch answers: the time to learn from is the busiest command's."""

from __future__ import annotations

import msgspec

from bitrix_results._transport.codec import decode_reply


def _body(envelope_operating: float, commands: dict[str, float]) -> bytes:
    result_time = {
        key: {"start": 1.0, "operating": op, "operating_reset_at": 1700000600 + i}
        for i, (key, op) in enumerate(commands.items())
    }
    return msgspec.json.encode(
        {
            "result": {"result": {}, "result_error": [], "result_time": result_time},
            "time": {
                "start": 1.0,
                "operating": envelope_operating,
                "operating_reset_at": 1700000000,
            },
        }
    )


def test_nested_billing_takes_the_largest_command_total():
    reply = decode_reply(_body(0.0, {"a": 0.7, "b": 2.5}), status=200, method="batch")
    assert reply.time is not None
    assert reply.time.operating == 2.5
    assert reply.time.operating_reset_at == 1700000601


def test_envelope_total_wins_when_it_is_larger():
    reply = decode_reply(_body(4.0, {"a": 0.7}), status=200, method="batch")
    assert reply.time is not None
    assert reply.time.operating == 4.0


def test_empty_result_time_list_keeps_the_envelope_time():
    body = msgspec.json.encode(
        {"result": {"result": [], "result_time": []}, "time": {"operating": 1.5}}
    )
    reply = decode_reply(body, status=200, method="batch")
    assert reply.time is not None
    assert reply.time.operating == 1.5


def test_rest3_batch_list_result_keeps_the_envelope_time():
    body = msgspec.json.encode({"result": [{"item": {}}], "time": {"operating": 0.3}})
    reply = decode_reply(body, status=200, method="batch")
    assert reply.time is not None
    assert reply.time.operating == 0.3
