"""ntp_server.py - NTP servers on the loopback for certd's tests.

Chrony runs Debian's real chronyd as an NTP server on 127.0.0.1 with its
clock moved by libfaketime (preloaded, FAKETIME="+1h"), so that certd can
be tested against a server an hour or ten years away from the host without
touching the host's clock:
chronyd runs with -x (never steers the system clock) and `local stratum 1`
(serves its own clock, no upstream), and faketime shifts only the clock that
chronyd reads, so the time it serves is the host's plus the offset.

BogusResponder answers like a server but with an origin timestamp that is not
the request's (a spoofed or stale reply that a client must ignore), or with a
Kiss-o'-Death ("RATE" by default).

query() is a small SNTP client, used to wait for chronyd and to check what it
serves.  Timestamps are NTP 64-bit values; every difference between two of
them is taken modulo 2^64 and read as signed, so a server past the 2036 era
wrap (ten years from 2026) still gives its true offset.

Everything is bounded in time: starts, queries and stops give up after a
timeout, and chronyd itself is told to exit after `max_lifetime` seconds in
case a test dies without stopping it.

Run it (as root, with the packages chrony and faketime) for a self-check:
    python3 tests/certd/ntp_server.py
"""

import glob
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

NTP_UNIX_DELTA = 2208988800  # seconds from 1900-01-01 to 1970-01-01
FRAC_ONE = 1 << 32
MOD64 = 1 << 64


class NtpError(Exception):
    """A reply that is not a valid answer to our request."""


def free_udp_port():
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ntp_now(offset_s=0.0):
    """The host clock (plus offset_s) as a 64-bit NTP timestamp, wrapped into its era."""
    ns = time.time_ns() + int(offset_s * 1e9) + NTP_UNIX_DELTA * 10**9
    return (ns * FRAC_ONE // 10**9) % MOD64


def ntp_diff(a, b):
    """a - b in seconds, read the short way round the 136-year circle."""
    d = (a - b) % MOD64
    if d >= MOD64 // 2:
        d -= MOD64
    return d / FRAC_ONE


def server_reply(origin, offset_s=0.0, stratum=2, leap=0, refid=b"LOCL"):
    """A 48-byte server reply (VN 4, mode 4) to a request whose transmit
    timestamp was `origin`, with the server's clock offset_s from the host's."""
    stamp = ntp_now(offset_s)
    return struct.pack(
        "!BBbb4s4s4sQQQ",
        leap << 6 | 4 << 3 | 4,
        stratum,
        6,  # poll
        -20,  # precision, about 1 us
        b"\0" * 4,  # root delay
        b"\0" * 4,  # root dispersion
        refid,
        stamp,  # reference timestamp
        origin,
        stamp,  # receive
    ) + struct.pack("!Q", stamp)  # transmit


def query_sample(port, timeout=1.0, host="127.0.0.1"):
    """One SNTP exchange; returns (offset_s, delay_s, stratum).  Raises
    TimeoutError when no valid reply comes within `timeout`, NtpError when
    the only replies were invalid (the last one's reason)."""
    deadline = time.monotonic() + timeout
    last_error = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        t1 = ntp_now()
        sent = (t1 & ~0xFFFFFF) | secrets.randbits(24)  # hard to guess, like certd's
        s.send(bytes([0x23]) + b"\0" * 39 + struct.pack("!Q", sent))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if last_error:
                    raise NtpError(last_error)
                raise TimeoutError(f"no answer from {host}:{port} in {timeout} s")
            s.settimeout(left)
            try:
                data = s.recv(512)
            except socket.timeout:
                continue
            except ConnectionRefusedError as e:
                raise TimeoutError(f"nothing listening on {host}:{port}") from e
            t4 = ntp_now()
            try:
                return _parse(data, sent, t1, t4)
            except NtpError as e:
                last_error = str(e)


def _parse(data, sent, t1, t4):
    if len(data) < 48:
        raise NtpError(f"short reply ({len(data)} bytes)")
    first, stratum = data[0], data[1]
    if first & 7 != 4:
        raise NtpError(f"mode {first & 7}, not a server reply")
    origin, t2, t3 = struct.unpack_from("!QQQ", data, 24)
    if origin != sent:
        raise NtpError("origin timestamp is not our request's")
    if stratum == 0:
        raise NtpError(f"Kiss-o'-Death {data[12:16].decode('ascii', 'replace')!r}")
    if first >> 6 == 3 or stratum > 15:
        raise NtpError("server is unsynchronised")
    offset = (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2
    delay = ntp_diff(t4, t1) - ntp_diff(t3, t2)
    return offset, delay, stratum


def query(port, timeout=1.0, host="127.0.0.1"):
    """The offset in seconds of the server at host:port from the host clock."""
    return query_sample(port, timeout, host)[0]


_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def offset_seconds(spec):
    """What a faketime relative spec ("+1h", "-90s", "+3650d", "+10y")
    shifts the clock by, in seconds (faketime's y is 365 days)."""
    m = re.fullmatch(r"([+-]\d+(?:\.\d+)?)([smhdy]?)", spec)
    if not m:
        raise ValueError(f"not a relative faketime offset: {spec!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _find_chronyd():
    for path in (shutil.which("chronyd"), "/usr/sbin/chronyd", "/sbin/chronyd"):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("chronyd is not installed (apt-get install -y chrony)")


def _find_libfaketime():
    candidates = glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/*lib*/faketime/libfaketime.so.1")
    if not candidates:
        raise RuntimeError("libfaketime is not installed (apt-get install -y faketime)")
    return candidates[0]


class Chrony:
    """chronyd serving NTP on 127.0.0.1:port with its clock `offset` away
    (a faketime spec, "+1h", "+3650d" or "+10y").  Use start()/stop() or
    `with Chrony(...) as c:`."""

    def __init__(self, port=None, offset="+0", start_timeout=15.0, max_lifetime=600):
        self.port = port or free_udp_port()
        self.offset = offset
        self.expected_offset = offset_seconds(offset)
        self.start_timeout = start_timeout
        self.max_lifetime = max_lifetime
        self.proc = None
        self.dir = None

    def _write_config(self):
        conf = os.path.join(self.dir, "chrony.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\n"
                "bindaddress 127.0.0.1\n"
                "allow 127.0.0.1\n"
                # Serve our own (faked) clock as a stratum 1 server, no upstream.
                "local stratum 1\n"
                # No command port, no Unix command socket (the host's chronyd
                # owns /run/chrony/chronyd.sock), our own pid file.
                "cmdport 0\n"
                "bindcmdaddress /\n"
                f"pidfile {os.path.join(self.dir, 'chronyd.pid')}\n"
            )
        return conf

    def command(self, conf):
        """chronyd in the foreground (-d), never touching the system clock
        (-x), exiting on its own after max_lifetime s (-t).  As root it stays
        root (-u root): dropping to _chrony would leave it unable to remove
        its pid file in our temp dir.  Not as root, -U skips its root check."""
        cmd = [_find_chronyd(), "-x", "-d", "-t", str(int(self.max_lifetime))]
        cmd += ["-u", "root"] if os.geteuid() == 0 else ["-U"]
        return cmd + ["-f", conf]

    def environment(self):
        """libfaketime preloaded into chronyd itself rather than the faketime
        wrapper, which forks: terminating the wrapper would leave chronyd
        running.  FAKETIME "+1h" shifts every clock chronyd reads."""
        return dict(os.environ, LD_PRELOAD=_find_libfaketime(), FAKETIME=self.offset)

    def start(self):
        self._check_port_free()
        self.dir = tempfile.mkdtemp(prefix="certd-chrony-")
        self.log_path = os.path.join(self.dir, "chronyd.log")
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.command(self._write_config()),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(),
                )
            self._wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_serving(self):
        deadline = time.monotonic() + self.start_timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chronyd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                served = query(self.port, timeout=0.5)
                break
            except (TimeoutError, NtpError, OSError) as e:
                last = e
                time.sleep(0.1)
        else:
            raise RuntimeError(
                f"chronyd did not serve on 127.0.0.1:{self.port} within {self.start_timeout} s "
                f"(last: {last}):\n{self.log()}"
            )
        # The answer could come from someone else on the port, or faketime
        # could have failed to reach chronyd's clock: both show here.
        if abs(served - self.expected_offset) > 5:
            raise RuntimeError(
                f"127.0.0.1:{self.port} serves an offset of {served:.3f} s, not {self.expected_offset:.0f} s "
                f"(faketime not effective, or another server on the port):\n{self.log()}"
            )

    def _check_port_free(self):
        """chronyd binds with SO_REUSEPORT and would share a port already in
        use without a word; a plain bind fails on it."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError as e:
                raise RuntimeError(f"UDP port 127.0.0.1:{self.port} is taken: {e}") from e

    def log(self):
        """What chronyd wrote so far."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class BogusResponder:
    """A UDP server on 127.0.0.1 that answers every request wrongly:
    mode "spoof" with a well-formed reply (server clock offset_s away) whose
    origin timestamp is not the request's transmit timestamp; mode "kiss"
    with a matching Kiss-o'-Death (stratum 0, code `kiss_code`).
    `requests` counts what it received."""

    def __init__(self, offset_s=0.0, mode="spoof", kiss_code="RATE", port=0):
        if mode not in ("spoof", "kiss"):
            raise ValueError(f"mode {mode!r}: spoof or kiss")
        self.offset_s = offset_s
        self.mode = mode
        self.kiss_code = kiss_code.encode("ascii")[:4].ljust(4, b" ")
        self.requests = 0
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _answer(self, request):
        (xmit,) = struct.unpack_from("!Q", request, 40)
        if self.mode == "kiss":
            return server_reply(xmit, self.offset_s, stratum=0, leap=3, refid=self.kiss_code)
        stale = (xmit - (64 << 32)) % MOD64  # as if answering a request of a minute ago
        return server_reply(stale, self.offset_s)

    def _serve(self):
        while not self._stop.is_set():
            try:
                request, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(request) >= 48:
                self.requests += 1
                self.sock.sendto(self._answer(request), peer)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(2.0)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _self_check():
    for spec in ("+1h", "+10y"):
        with Chrony(offset=spec) as server:
            offset, delay, stratum = query_sample(server.port)
            print(f"chronyd {spec} on 127.0.0.1:{server.port}: offset {offset:.3f} s "
                  f"(expected {server.expected_offset:.0f}), delay {delay * 1000:.2f} ms, stratum {stratum}")
            assert abs(offset - server.expected_offset) < 1.0, offset
    for mode, expect in (("spoof", "origin"), ("kiss", "RATE")):
        with BogusResponder(offset_s=3600, mode=mode) as bogus:
            try:
                query(bogus.port, timeout=0.3)
                raise AssertionError(f"{mode}: a bogus reply was accepted")
            except NtpError as e:
                assert expect in str(e), e
                print(f"bogus responder ({mode}) refused: {e}")
    print("ok")


if __name__ == "__main__":
    _self_check()
