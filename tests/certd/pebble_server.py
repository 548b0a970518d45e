"""A real ACME server for the certd tests: Debian's `pebble` plus its `pebble-challtestsrv`.

Pebble validates HTTP-01 challenges for real: it resolves the name through challtestsrv (which
answers 127.0.0.1 for every name) and fetches http://<name>:<http_port>/.well-known/acme-challenge/
from whoever listens on `http_port` -- in the tests, the broker itself. Every listener is bound
to loopback on a free port, and challtestsrv's own challenge responders are switched off, so
nothing here clashes with another test's ports.

Debian's package ships no certificate for the directory's own HTTPS, so a throwaway CA and a
server certificate for 127.0.0.1/localhost are made with `openssl` in the temporary directory;
`ca_file` is that CA (what an ACME client is given to trust the directory). The certificates
that Pebble *issues* are signed by another root, made fresh at each start: `issuing_roots_pem()`
fetches it from the management interface.

Pebble 2.4.0 facts the options rely on: PEBBLE_VA_NOSLEEP=1 removes the random validation
delays (PEBBLE_VA_SLEEPTIME=N instead makes them up to N s); PEBBLE_WFE_NONCEREJECT is the
percentage of good nonces refused as badNonce (pebble's default is 5, which exercises a client's
retries); PEBBLE_AUTHZREUSE=0 makes every order validate again; the config's
"certificateValidityPeriod" (seconds) makes short-lived certificates. 2.4.0 has no renewalInfo (RFC 9773) in its directory.

Run `python3 pebble_server.py` for a self-check: starts both, prints the directory, stops.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

START_TIMEOUT_S = 15
STOP_TIMEOUT_S = 5


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now (the usual small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1: challtestsrv's DNS listens on both."""
    for _ in range(50):
        port = free_port()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def _openssl(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_directory_tls(workdir, san="DNS:localhost,IP:127.0.0.1"):
    """A CA and a certificate for `san` (default: 127.0.0.1 and localhost) signed by it, for the directory's
    HTTPS. Returns (ca_pem, cert_pem, key_pem) paths."""
    ca_key, ca_pem = os.path.join(workdir, "dir-ca.key"), os.path.join(workdir, "dir-ca.pem")
    key, csr, pem = (os.path.join(workdir, n) for n in ("dir.key", "dir.csr", "dir.pem"))
    ext = os.path.join(workdir, "dir.ext")
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", ca_key, "-out", ca_pem, "-days", "2", "-subj", "/CN=pebble test directory CA"], workdir)
    _openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], workdir)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n" % san +
                "extendedKeyUsage=serverAuth\n")
    _openssl(["x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
              "-out", pem, "-days", "2", "-extfile", ext], workdir)
    return ca_pem, pem, key


class Pebble:
    """pebble + pebble-challtestsrv on loopback. `http_port` is where the HTTP-01 answers are
    served (the broker's --http_port); `nonce_reject` is PEBBLE_WFE_NONCEREJECT (None = pebble's
    default 5 %); `validity_s` the issued certificates' lifetime (None = pebble's default);
    `authz_reuse` is PEBBLE_AUTHZREUSE (0 = every order validates again); `va_sleep_s`, when given,
    makes every validation wait up to that many seconds (PEBBLE_VA_SLEEPTIME: pebble sleeps a
    random time below it), for tests of a client's time bounds; `blocked_domains` are names
    Pebble refuses to order (its "domainBlocklist": rejectedIdentifier)."""

    def __init__(self, http_port, nonce_reject=None, validity_s=None, authz_reuse=0, va_sleep_s=None, workdir=None,
                 blocked_domains=()):
        self.http_port = http_port
        self.blocked_domains = list(blocked_domains)
        self.nonce_reject = nonce_reject
        self.validity_s = validity_s
        self.authz_reuse = authz_reuse
        self.va_sleep_s = va_sleep_s
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pebble-")
        self.acme_port = self.mgmt_port = self.dns_port = self.chall_mgmt_port = None
        self._pebble = self._chall = None
        self._logs = []
        self.ca_file = None

    # ---- what tests use ------------------------------------------------------------------

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.acme_port

    @property
    def management_url(self):
        return "https://127.0.0.1:%d" % self.mgmt_port

    def issuing_roots_pem(self):
        """Writes the root that signs the issued certificates (then pebble's intermediate) to a
        file and returns its path: what `curl --cacert` needs to verify a served certificate."""
        root = self._management_get("/roots/0")
        intermediate = self._management_get("/intermediates/0")
        path = os.path.join(self.workdir, "issuing-roots.pem")
        with open(path, "w") as f:
            f.write(root.rstrip("\n") + "\n" + intermediate.rstrip("\n") + "\n")
        return path

    def issuing_root_only_pem(self):
        """Only the root (for `openssl verify -CAfile`, the intermediate given as -untrusted)."""
        path = os.path.join(self.workdir, "issuing-root.pem")
        with open(path, "w") as f:
            f.write(self._management_get("/roots/0"))
        return path

    def intermediate_pem(self):
        path = os.path.join(self.workdir, "issuing-intermediate.pem")
        with open(path, "w") as f:
            f.write(self._management_get("/intermediates/0"))
        return path

    def logs(self):
        """Both servers' logs so far, for a failing test's message."""
        out = []
        for path in self._logs:
            try:
                with open(path, errors="replace") as f:
                    out.append("==> %s <==\n%s" % (path, f.read()))
            except OSError:
                pass
        return "\n".join(out)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self):
        for tool in ("pebble", "pebble-challtestsrv", "openssl"):
            if shutil.which(tool) is None:
                raise RuntimeError("%s is not installed (apt-get install -y pebble openssl)" % tool)
        self.ca_file, cert, key = make_directory_tls(self.workdir)
        self.acme_port, self.mgmt_port = free_port(), free_port()
        self.dns_port, self.chall_mgmt_port = free_udp_tcp_port(), free_port()
        try:
            self._start_challtestsrv()
            self._start_pebble(cert, key)
            self._wait_directory()
        except Exception as e:
            logs = self.logs()
            self.stop()
            raise RuntimeError("pebble did not start: %s\n%s" % (e, logs)) from e
        return self

    def stop(self):
        for proc in (self._pebble, self._chall):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._pebble = self._chall = None

    def cleanup(self):
        """stop(), then removes the temporary directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # ---- internals -----------------------------------------------------------------------

    def _spawn(self, name, argv, env=None):
        log_path = os.path.join(self.workdir, name + ".log")
        self._logs.append(log_path)
        log = open(log_path, "wb")
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, env=env)
        finally:
            log.close()  # the child has its own copy

    def _start_challtestsrv(self):
        # Only the DNS server and the management API: pebble fetches the HTTP-01 answers from
        # the code under test, not from challtestsrv.
        self._chall = self._spawn("challtestsrv", [
            "pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", "127.0.0.1:%d" % self.chall_mgmt_port])

    def _start_pebble(self, cert, key):
        conf = {
            "listenAddress": "127.0.0.1:%d" % self.acme_port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": cert,
            "privateKey": key,
            "httpPort": self.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_s is not None:
            conf["certificateValidityPeriod"] = int(self.validity_s)
        if self.blocked_domains:
            conf["domainBlocklist"] = self.blocked_domains
        conf_path = os.path.join(self.workdir, "pebble-config.json")
        with open(conf_path, "w") as f:
            json.dump({"pebble": conf}, f, indent=2)
        env = dict(os.environ)
        if self.va_sleep_s is None:
            env["PEBBLE_VA_NOSLEEP"] = "1"
        else:
            env.pop("PEBBLE_VA_NOSLEEP", None)
            env["PEBBLE_VA_SLEEPTIME"] = str(int(self.va_sleep_s))
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        if self.nonce_reject is not None:
            env["PEBBLE_WFE_NONCEREJECT"] = str(int(self.nonce_reject))
        if self.authz_reuse is not None:
            env["PEBBLE_AUTHZREUSE"] = str(int(self.authz_reuse))
        self._pebble = self._spawn("pebble", [
            "pebble", "-config", conf_path, "-dnsserver", "127.0.0.1:%d" % self.dns_port], env=env)

    def _ssl_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def _management_get(self, path):
        with urllib.request.urlopen(self.management_url + path, context=self._ssl_context(), timeout=10) as r:
            return r.read().decode()

    def directory(self):
        with urllib.request.urlopen(self.directory_url, context=self._ssl_context(), timeout=5) as r:
            return json.loads(r.read().decode())

    def _wait_directory(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            for name, proc in (("pebble", self._pebble), ("pebble-challtestsrv", self._chall)):
                if proc.poll() is not None:
                    raise RuntimeError("%s exited with status %d" % (name, proc.returncode))
            try:
                self.directory()
                self._management_get("/roots/0")
                return
            except (OSError, urllib.error.URLError, ValueError) as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError("the directory %s did not answer within %d s (last: %s)"
                           % (self.directory_url, START_TIMEOUT_S, last))


if __name__ == "__main__":
    with Pebble(http_port=free_port(), validity_s=3600) as p:
        print("directory", p.directory_url)
        print(json.dumps(p.directory(), indent=2))
        print("ca_file", p.ca_file)
        roots = p.issuing_roots_pem()
        print("issuing roots", roots, os.path.getsize(roots), "bytes")
    print("stopped")
    sys.exit(0)
