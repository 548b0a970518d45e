"""A raw-socket SSE reader with bounded waits, for the split tests (test_split.py,
test_forwarders.py): each stream process is reached on its own port, without the gateway."""

import json
import socket
import time


class Stream:
    """A raw-socket SSE reader with bounded waits."""

    def __init__(self, port, headers, path="/sse"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        lines = "".join("%s: %s\r\n" % kv for kv in headers.items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, lines)).encode())
        self.presence = []  # $presence frames' data, in order, as next_event() passes them
        self.buf = b""
        head = self._read_until(b"\r\n\r\n", 5)
        self.status = int(head.split(b" ")[1])

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %r within %ss" % (marker, timeout))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk
        part, self.buf = self.buf.split(marker, 1)
        return part

    def _next_block(self, deadline):
        """The fields of the next frame (comments skipped), by `deadline` (monotonic)."""
        while True:
            block = self._read_until(b"\n\n", max(0.001, deadline - time.monotonic())).decode()
            fields = {}
            for line in block.split("\n"):
                if line.startswith(":") or not line:
                    continue
                k, _, v = line.partition(": ")
                fields[k] = v
            if fields:
                return fields

    def next_event(self, timeout=5):
        """The next event with an id; $presence frames on the way are kept in self.presence."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self._next_block(deadline)
            if "id" in fields:
                return int(fields["id"]), fields["event"], json.loads(fields["data"])
            if fields.get("event") == "$presence":
                self.presence.append(json.loads(fields["data"]))

    def next_presence(self, timeout=5):
        """The next $presence frame's data (an event meanwhile is an error: ask for none)."""
        deadline = time.monotonic() + timeout
        while not self.presence:
            fields = self._next_block(deadline)
            if "id" in fields:
                raise AssertionError("an event where a $presence frame was awaited: %r" % (fields,))
            if fields.get("event") == "$presence":
                self.presence.append(json.loads(fields["data"]))
        return self.presence.pop(0)

    def events(self, count, timeout=10):
        return [self.next_event(timeout) for _ in range(count)]

    def nothing_more(self, wait):
        """No further event within `wait` seconds (keep-alive comments aside)."""
        try:
            self.next_event(wait)
        except (TimeoutError, socket.timeout):
            return True
        return False

    def closed_within(self, timeout):
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, socket.timeout):
            return time.monotonic() < deadline
        return False

    def close(self):
        self.sock.close()
