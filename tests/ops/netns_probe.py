"""Runs inside a network namespace of its own (tests/ops/test_ports.py starts it under
`unshare --net`): brings loopback up, starts the broker command it is given, waits until one of
the ports to look at speaks TLS (or the broker exits), then says what each port is and prints
one JSON object on stdout.

Its own namespace, because the command binds the privileged ports 443 and 80, which the host
or another test may hold; nothing it starts can reach the network, so ACME and NTP fail fast
and the broker serves its temporary self-signed certificate.

  netns_probe.py WORKDIR HOST PORT[,PORT...] -- BROKER ARGS...
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

START_TIMEOUT = 15.0
IO_TIMEOUT = 5.0


def read_answer(sock):
    """The status line and headers of one HTTP answer (the body is not needed)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def request(host, path):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode()


def probe_tls(port, host):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the temporary self-signed certificate
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(request(host, "/healthz"))
            status, _ = read_answer(s)
    return {"kind": "tls", "healthz": status, "cert_names_host": host.encode() in der}


def probe_plain(port, host):
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(request(host, "/healthz?x=1"))
        status, headers = read_answer(s)
    return {"kind": "plain", "status": status, "location": headers.get("location")}


def probe(port, host):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT).close()
    except OSError:
        return {"kind": "closed"}
    try:
        return probe_tls(port, host)
    except (ssl.SSLError, OSError):
        pass
    try:
        return probe_plain(port, host)
    except OSError as e:
        return {"kind": "error", "error": str(e)}


def main():
    workdir, host, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
    assert sys.argv[4] == "--"
    cmd = sys.argv[5:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    log_path = os.path.join(workdir, "broker.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    out = {"ports": {}}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if any(probe(p, host)["kind"] == "tls" for p in ports):
                break
            time.sleep(0.2)
        out["exited"] = proc.poll()
        for p in ports:
            out["ports"][str(p)] = probe(p, host)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with open(log_path, errors="replace") as f:
            out["log"] = f.read()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
