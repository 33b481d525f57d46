"""Oversized records and the dead-letter topic, against a real broker (tansu): what fits is
dead-lettered (cut, with a header saying so), what is refused is counted, and nothing stalls."""

from __future__ import annotations

import time

from sentinel.daemon.kafka_io import DeadLetters, Record
from tests.testkit.daemon import consume_all
from tests.testkit.loop import make_loop, rec


def test_an_oversized_record_is_dead_lettered_cut_with_a_header_saying_so(kafka_broker):
    kafka_broker.create_topic("metrics.dlq")
    letters = DeadLetters((kafka_broker.bootstrap,), "metrics.dlq", "metrics")
    value = b"x" * (10 * 1024 * 1024)
    letters.send(Record(0, 7, b"cart", value, False), "too_large", "10485760 bytes > 65536")
    try:
        started = time.monotonic()
        assert letters.flush(timeout_seconds=20)
        assert time.monotonic() - started < 20
        landed = consume_all(kafka_broker.bootstrap, "metrics.dlq", 1)
    finally:
        letters.close()
    headers = dict(landed[0].headers)
    assert headers["sentinel-truncated"] == b"true"
    assert headers["sentinel-original-bytes"] == str(len(value)).encode()
    assert landed[0].value == value[: letters.max_letter_bytes]


def test_a_letter_the_client_refuses_is_counted_and_dropped_not_retried_forever(kafka_broker):
    kafka_broker.create_topic("metrics.dlq")
    refused: list[tuple[str, str]] = []
    letters = DeadLetters((kafka_broker.bootstrap,), "metrics.dlq", "metrics",
                          on_undeliverable=lambda reason, error: refused.append((reason, error)),
                          max_letter_bytes=64 * 1024 * 1024)  # no cut: kafka-python refuses 10 MB
    letters.send(Record(0, 7, b"cart", b"x" * (10 * 1024 * 1024), False), "too_large", "big")
    letters.send(Record(0, 8, b"cart", b"{oops", False), "malformed_json", "Expecting value")
    try:
        assert letters.flush(timeout_seconds=20)
        landed = consume_all(kafka_broker.bootstrap, "metrics.dlq", 1)
    finally:
        letters.close()
    assert [reason for reason, _ in refused] == ["too_large"]
    assert "TooLarge" in refused[0][1]
    assert [r.value for r in landed] == [b"{oops"]


def test_unacknowledged_dead_letters_say_why_once_not_every_poll(caplog):
    loop = make_loop()
    loop.dead_letters.acknowledged = False
    loop.dead_letters.problem = "KafkaTimeoutError: no answer within 10 s"
    for i in range(20):
        loop.feed(rec(i, value=b"{oops"))
    lines = [r.getMessage() for r in caplog.records if "dead letters not acknowledged" in r.getMessage()]
    assert len(lines) == 1 and "KafkaTimeoutError" in lines[0]
