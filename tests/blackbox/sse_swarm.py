"""Many SSE subscribers in one thread (asyncio), each resuming like EventSource: when its stream
ends it waits what the stream's last `retry:` said, then connects again with Last-Event-ID. For
the drain tests (tests/split/test_replica_drain.py, tests/compose/test_compose_rolling.py),
where a thousand clients are closed over a few seconds and come back elsewhere.

    subs = [Subscriber(headers, first=("127.0.0.1", 8083), then=("127.0.0.1", 8080))
            for _ in range(n)]
    await connect_all(subs, timeout)   # every first stream answered 200
    ...                                # each sub.ids grows; sub.ends holds (time, retry) of each end
    await stop_all(subs)

Every wait is bounded; plain HTTP only. The parsing is sse_client.py's (SSEParser, and the
ChunkedDecoder for a gateway that chunks the stream)."""

import asyncio
import time

from sse_client import ChunkedDecoder, SSEParser

# A connect and its response head.  Generous, as EventSource has none: a client that gave up
# and asked again while the server still worked on its first request would only add to its work.
HEAD_TIMEOUT = 60.0
ERROR_PAUSE = 0.5  # after a refused or failed attempt: no tight loop


class Attempt:
    """One connect: its time, its address, its status (None: no answer)."""

    def __init__(self, addr):
        self.at = time.monotonic()
        self.addr = addr
        self.status = None
        self.answered = None  # monotonic time of the response head
        self.error = None  # why there was no answer


class Subscriber:
    def __init__(self, headers, first, then=None, default_retry_ms=3000):
        self.headers = dict(headers)
        self.first, self.then = first, then or first
        self.ids = []
        self.ends = []  # (monotonic time, the retry in ms its stream told last, or None) of each end
        self.attempts = []
        self.retry_ms = default_retry_ms
        self.connected = asyncio.Event()  # the first stream answered 200
        self.task = None
        self._writer = None
        self._stopping = False

    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self):
        addr = self.first
        while not self._stopping:
            a = Attempt(addr)
            self.attempts.append(a)
            told = None
            try:
                told = await self._stream(a)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
                a.error = repr(e)[:200]  # no answer, or a broken one (status None)
            if self._stopping:
                return
            if a.status == 200:
                self.ends.append((time.monotonic(), told))
                wait = self.retry_ms / 1000.0  # EventSource honours the server's retry:
            else:
                wait = ERROR_PAUSE
            addr = self.then
            await asyncio.sleep(wait)

    async def _stream(self, a):
        """Connects, reads one stream to its end; the retry its body told (ms) or None."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*a.addr), HEAD_TIMEOUT)
        self._writer = writer
        try:
            headers = dict(self.headers)
            if self.ids:
                headers["Last-Event-ID"] = str(self.ids[-1])
            lines = ["GET /sse HTTP/1.1", "Host: %s:%d" % a.addr, "Accept: text/event-stream"]
            lines += ["%s: %s" % kv for kv in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            a.status = int(status_line.split(" ")[1])
            a.answered = time.monotonic()
            if a.status != 200:
                return None
            self.connected.set()
            chunked = any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower()
                          for h in header_lines)
            decoder = ChunkedDecoder() if chunked else None
            parser = SSEParser()
            told = None
            while True:
                data = await reader.read(65536)
                if not data:
                    return told
                if decoder is not None:
                    data = decoder.feed(data)
                for kind, val in parser.feed(data):
                    if kind == "event" and val.id is not None:
                        self.ids.append(int(val.id))
                    elif kind == "retry" and val.isdigit():
                        told = self.retry_ms = int(val)
        finally:
            self._writer = None
            writer.close()

    async def stop(self):
        self._stopping = True
        if self._writer is not None:
            self._writer.close()
        if self.task is not None:
            self.task.cancel()
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.CancelledError, asyncio.TimeoutError, Exception):
                pass


async def connect_all(subs, timeout, batch=100):
    """Starts every subscriber, `batch` at a time; True when each one's first stream answered 200
    within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    for i in range(0, len(subs), batch):
        group = [s.start() for s in subs[i:i + batch]]
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in group)), left)
        except asyncio.TimeoutError:
            return False
    return True


async def stop_all(subs):
    await asyncio.gather(*(s.stop() for s in subs))


async def wait_until(predicate, timeout, step=0.1):
    """Polls predicate() until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        await asyncio.sleep(step)
