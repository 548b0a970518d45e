"""HTTPS as a client of the certd tests sees it: the certificate a port serves, curl trusting
only Pebble's roots, an SSE stream over verified TLS. Every name is DOMAIN, resolved to the
loopback."""

import json
import socket
import ssl
import subprocess
import time

DOMAIN = "broker.test"


def served_cert_der(port, timeout=5.0):
    """The certificate the TLS port serves for DOMAIN (not verified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname=DOMAIN) as t:
            return t.getpeercert(binary_form=True)


def cert_text(der):
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-issuer", "-ext",
                        "subjectAltName", "-fingerprint", "-sha256"], input=der, capture_output=True, check=True)
    return p.stdout.decode()


def self_signed(der):
    lines = dict(l.split("=", 1) for l in cert_text(der).splitlines() if l.startswith(("subject=", "issuer=")))
    return lines["subject"] == lines["issuer"]


def leaf_der_of(chain_path):
    """The first certificate of a PEM chain file, as DER."""
    p = subprocess.run(["openssl", "x509", "-in", chain_path, "-outform", "DER"], capture_output=True, check=True)
    return p.stdout


def curl(port, roots, path, body=None, token=None):
    """curl over HTTPS to DOMAIN (resolved to the loopback) trusting only `roots`:
    (status or None when the certificate does not verify / nothing answers, body text)."""
    args = ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert", roots,
            "--resolve", "%s:%d:127.0.0.1" % (DOMAIN, port)]
    if token is not None:
        args += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    p = subprocess.run(args + ["https://%s:%d%s" % (DOMAIN, port, path)], capture_output=True, text=True,
                       timeout=15)
    if p.returncode != 0:
        return None, p.stderr
    text, _, status = p.stdout.rpartition("\n")
    return int(status), text


class TlsStream:
    """GET /sse over TLS on a raw socket, verified against Pebble's roots for DOMAIN."""

    def __init__(self, port, roots, token):
        ctx = ssl.create_default_context(cafile=roots)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=DOMAIN)
        except Exception:
            raw.close()
            raise
        self.peer_der = self.sock.getpeercert(binary_form=True)
        self.sock.sendall(("GET /sse HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                           "Accept: text/event-stream\r\n\r\n" % (DOMAIN, token)).encode())
        self.buf = b""

    def wait_data(self, needle, timeout=10):
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.buf and time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buf += chunk
        return needle.encode() in self.buf

    def close(self):
        self.sock.close()
