"""Read-ahead batching for the modules' bidirectional streams.

A stream handler that took requests one by one would run its model at batch 1 while the next requests wait in
gRPC's buffers. `ReadAhead` moves requests from the stream into a bounded queue on a thread (receiving and
parsing the next ones while a batch is computed) and hands the handler batches of whatever has arrived: at
least one request, at most `max_batch`. The queue's bound is the backpressure: when the handler falls behind,
the reader stops reading, gRPC's flow control stops the client, and memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_END = object()


def put_until(q: queue.Queue, item: Any, stop: threading.Event, poll_s: float = 0.1) -> bool:
    """Put `item` into the bounded queue `q`, waiting while it is full; False (not put) once `stop` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class _Failed:
    error: BaseException


class ReadAhead:
    """Batches of a request stream. After `batches()` ends, `client_gone` says whether the stream failed or was
    cancelled (nothing more to answer) rather than ended by the client's half-close. Call `close()` when done."""

    def __init__(self, requests: Iterator[Any], max_batch: int, name: str, queue_size: int | None = None) -> None:
        self.max_batch = max(1, int(max_batch))
        self.client_gone = False
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size or 4 * self.max_batch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(requests,), name=f"{name}-stream-reader",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        return put_until(self._queue, item, self._stop)

    def _read(self, requests: Iterator[Any]) -> None:
        try:
            for request in requests:
                if not self._put(request):
                    return
        except Exception as exc:  # noqa: BLE001 - a cancelled or broken stream ends the reading
            self._put(_Failed(exc))
            return
        self._put(_END)

    def batches(self) -> Iterator[list[Any]]:
        while True:
            first = self._queue.get()
            if first is _END:
                return
            if isinstance(first, _Failed):
                self.client_gone = True
                return
            batch = [first]
            ended = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                    break
                if isinstance(item, _Failed):
                    self.client_gone = True
                    return
                batch.append(item)
            yield batch
            if ended:
                return

    def close(self) -> None:
        self._stop.set()
