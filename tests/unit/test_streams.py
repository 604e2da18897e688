"""Read-ahead batching of module streams (sipec/serving/streams.py)."""

from __future__ import annotations

import threading

from sipec.serving.streams import ReadAhead


def _drained(reader: ReadAhead) -> ReadAhead:
    reader._thread.join(5)   # everything is queued: the batches are then deterministic
    return reader


def test_batches_take_what_has_arrived_up_to_max_batch_in_order():
    reader = _drained(ReadAhead(iter(range(10)), max_batch=4, name="t", queue_size=32))
    assert list(reader.batches()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert not reader.client_gone
    reader.close()


def test_a_failing_stream_ends_the_batches_and_says_the_client_is_gone():
    def broken():
        yield 1
        yield 2
        raise RuntimeError("cancelled")

    reader = _drained(ReadAhead(broken(), max_batch=8, name="t", queue_size=32))
    assert list(reader.batches()) == []      # the batch that met the failure is not answered
    assert reader.client_gone
    reader.close()


def test_the_bounded_queue_stops_reading_until_the_handler_takes_more():
    taken = []
    release = threading.Event()

    def requests():
        for i in range(100):
            taken.append(i)
            yield i

    reader = ReadAhead(requests(), max_batch=2, name="t", queue_size=3)
    release.wait(0.3)
    assert len(taken) <= 5                   # 3 queued, one waiting to be put, one being made: backpressure
    got = [x for batch in reader.batches() for x in batch]
    assert got == list(range(100))
    reader.close()


def test_close_stops_the_reader_thread():
    def endless():
        i = 0
        while True:
            i += 1
            yield i

    reader = ReadAhead(endless(), max_batch=2, name="t", queue_size=2)
    next(reader.batches())
    reader.close()
    reader._thread.join(2)
    assert not reader._thread.is_alive()
