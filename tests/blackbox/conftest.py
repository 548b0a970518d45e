"""Black-box test harness: starts the real broker binary and talks HTTP to it.

The contract under test is docs/API.md. Nothing here knows the server's
internals: every check goes through the public HTTP API, the command line and the logs.

Environment:
  BROKER_BIN               binary to start (default: <repo>/build/broker)
  BROKER_TEST_BASE_URL     use this already-running server instead of starting one
                           (split deployments); tests needing special flags then skip
  BROKER_TEST_ADMIN_TOKEN  admin token of that server   (default: letmein)
  BROKER_TEST_JWT_SECRET   JWT secret of that server    (default: secret)
  BROKER_TEST_JWT_EXPIRY   JWT lifetime of that server  (default: 86400)
  BROKER_TEST_ORIGIN       --origin of that server      (default: *)
  BROKER_TEST_TLS=1        every server this suite starts serves HTTPS (--secure=true
                           --auto_cert=false, a certificate of a test CA made here with the
                           openssl command line, --http_port=0); base URLs are https://, requests
                           verify against that CA, and raw sockets to those servers do TLS
                           (see "TLS" below)
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import subprocess
import shutil
import sys
import tempfile
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # sse_client, when this file is loaded from another folder (tests/tls)
    sys.path.append(HERE)

import sse_client  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))
EXTERNAL_URL = os.environ.get("BROKER_TEST_BASE_URL", "").rstrip("/")
# mongodb://host:port/ : every server this suite starts then uses the MongoDB
# backend, each on a database of its own, instead of the embedded store.
STORE_URI_BASE = os.environ.get("BROKER_TEST_STORE_URI", "")

DEFAULT_EXPIRY = 86400
STARTUP_TIMEOUT = 10.0  # seconds until /healthz must answer
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 10.0  # every request is bounded

# Servers currently running; their stderr is attached to any failing test's report.
_ACTIVE = []
# Scratch dirs (db, logs) of started servers; removed at the end unless BROKER_TEST_KEEP=1.
_WORKDIRS = []

TLS_MODE = os.environ.get("BROKER_TEST_TLS") == "1"


def uniq(prefix="u"):
    """A username (or tenant) no other test uses."""
    return "%s_%s" % (prefix, uuid.uuid4().hex[:16])


def needs_own_server(reason="needs a server started with special flags"):
    if EXTERNAL_URL:
        pytest.skip("BROKER_TEST_BASE_URL is set: %s" % reason)


# ---------------------------------------------------------------- JWT helpers

def b64url_encode(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    text = text.encode("ascii") if isinstance(text, str) else text
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def jwt_parts(token):
    """(header dict, payload dict, signature bytes) of a compact JWS, unverified."""
    parts = token.split(".")
    assert len(parts) == 3, "JWT must have 3 dot-separated parts: %r" % token
    return (json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1])),
            b64url_decode(parts[2]))


def make_jwt(payload, secret, alg="HS256", header=None):
    """Sign a token ourselves (to forge tokens the server must refuse, or accept)."""
    hdr = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = (b64url_encode(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64url_encode(json.dumps(payload, separators=(",", ":")).encode()))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg)
    if digest is None:  # "none" and friends: no signature
        return signing_input + "."
    sig = hmac.new(secret.encode(), signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + b64url_encode(sig)


def hs256_signature_ok(token, secret):
    head, payload, sig = token.split(".")
    want = hmac.new(secret.encode(), (head + "." + payload).encode("ascii"), hashlib.sha256).digest()
    return hmac.compare_digest(want, b64url_decode(sig))


def basic_header(username, password):
    raw = ("%s:%s" % (username, password)).encode("utf-8")
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def bearer_header(token):
    return {"Authorization": "Bearer " + token}


# ---------------------------------------------------------------- assertions

def describe(r):
    return "%s %s -> %s %r" % (r.request.method, r.request.url, r.status_code, r.text[:500])


def assert_json_response(r):
    ctype = r.headers.get("Content-Type", "")
    assert ctype.lower().startswith("application/json"), \
        "Content-Type %r is not application/json: %s" % (ctype, describe(r))
    try:
        return r.json()
    except ValueError:
        raise AssertionError("body is not JSON: %s" % describe(r))


def assert_error(r, status):
    """SPEC: every error answers {"error": "<non-empty words>"} with the given status."""
    if isinstance(status, int):
        status = (status,)
    assert r.status_code in status, "expected %s: %s" % (status, describe(r))
    body = assert_json_response(r)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) \
        and body["error"].strip(), "error body must be {\"error\": \"...\"}: %s" % describe(r)
    return body


def assert_ok(r):
    assert r.status_code == 200, "expected 200: %s" % describe(r)
    return assert_json_response(r)


# ---------------------------------------------------------------- TLS
# A throw-away certificate authority, made once per session with the openssl command line in a
# temp dir (P-256 keys: fast handshakes, and what browsers accept), and the helpers the TLS tests
# (tests/tls, tests/browser/test_browser_tls.py) and BROKER_TEST_TLS=1 use.
#
#   ca = tls_ca()
#   ca.ca_cert, ca.server_cert, ca.server_key   # PEM paths; server: 127.0.0.1 and localhost
#   ca.second_pair()     -> (cert, key)  another valid server pair (certificate swap tests)
#   ca.expired_pair()    -> (cert, key)  valid from 30 days ago to 1 day ago
#   ca.mismatched_key()  -> key          a key no certificate here is for
#   ca.issue(name, not_before=, not_after=, sans=) -> (cert, key)
#   cert_sha256(path), served_cert_sha256(base_url), spki_sha256_b64(path)
#   open_socket(base_url, timeout): a connected socket, TLS (handshake done) for https://
#
# With BROKER_TEST_TLS=1 the raw sockets the tests open themselves (socket.create_connection,
# http.client.HTTPConnection, which calls it) to a TLS server this harness started do TLS too:
# socket.create_connection is replaced by open_socket's TLS-aware version for exactly those
# servers' ports (the test files need no change; other destinations get a plain socket).

SERVER_SANS = "IP:127.0.0.1,DNS:localhost"


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(map(str, args)), r.returncode,
                                                          r.stderr.strip()[-2000:]))
    return r.stdout


def _asn1_time(t):
    return time.strftime("%y%m%d%H%M%SZ", time.gmtime(t))


class LocalCA:
    """A test certificate authority in `directory` (files: ca.pem, ca.key, <name>.pem/.key)."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_cert = os.path.join(directory, "ca.pem")
        self.ca_key = os.path.join(directory, "ca.key")
        self._conf = os.path.join(directory, "ca.cnf")
        self._cache = {}
        os.makedirs(os.path.join(directory, "issued"), exist_ok=True)
        open(os.path.join(directory, "index.txt"), "w").close()
        with open(os.path.join(directory, "serial"), "w") as f:
            f.write("1000\n")
        with open(self._conf, "w") as f:
            f.write("[ca]\ndefault_ca = ca_default\n"
                    "[ca_default]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/issued\n"
                    "serial = $dir/serial\ndefault_md = sha256\npolicy = policy_any\n"
                    "unique_subject = no\nemail_in_dn = no\ncopy_extensions = none\n"
                    "[policy_any]\ncommonName = supplied\n" % directory)
        self.new_key("ca")
        _openssl("req", "-x509", "-new", "-key", self.ca_key, "-out", self.ca_cert,
                 "-days", "3", "-subj", "/CN=Broker test CA " + uuid.uuid4().hex[:8],
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.server_cert, self.server_key = self.issue("server")

    def new_key(self, name):
        """A fresh P-256 key (PKCS#8 PEM) at <dir>/<name>.key."""
        path = os.path.join(self.dir, name + ".key")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
        return path

    def issue(self, name, not_before=None, not_after=None, sans=SERVER_SANS, key=None):
        """A server certificate signed by this CA: (cert path, key path). Dates are Unix times
        (default: valid from an hour ago for two days)."""
        now = time.time()
        not_before = now - 3600 if not_before is None else not_before
        not_after = now + 2 * 86400 if not_after is None else not_after
        key = key or self.new_key(name)
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("[ext]\nbasicConstraints = critical,CA:FALSE\n"
                    "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
                    "subjectAltName = %s\n" % sans)
        _openssl("req", "-new", "-key", key, "-subj", "/CN=" + name, "-out", csr)
        _openssl("ca", "-batch", "-config", self._conf, "-cert", self.ca_cert, "-keyfile", self.ca_key,
                 "-in", csr, "-out", cert, "-notext", "-startdate", _asn1_time(not_before),
                 "-enddate", _asn1_time(not_after), "-extfile", ext, "-extensions", "ext")
        return cert, key

    def _once(self, name, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def second_pair(self):
        """Another valid pair for 127.0.0.1/localhost (a different key and certificate)."""
        return self._once("second", lambda: self.issue("server2"))

    def expired_pair(self):
        now = time.time()
        return self._once("expired", lambda: self.issue("expired", now - 30 * 86400, now - 86400))

    def mismatched_key(self):
        """A key that belongs to no certificate here."""
        return self._once("mismatched", lambda: self.new_key("mismatched"))


_CA = []


def tls_ca():
    """The session's test CA (made on first use; its dir is removed with the servers' dirs).
    Its CA certificate becomes sse_client's default trust (and, with BROKER_TEST_TLS=1,
    REQUESTS_CA_BUNDLE, for requests calls that do not go through Broker)."""
    if not _CA:
        d = tempfile.mkdtemp(prefix="broker-tls-ca-")
        _WORKDIRS.append(d)
        _CA.append(LocalCA(d))
        if sse_client.TLS_CA_FILE is None:
            sse_client.TLS_CA_FILE = _CA[0].ca_cert
        if TLS_MODE:
            os.environ["REQUESTS_CA_BUNDLE"] = _CA[0].ca_cert
    return _CA[0]


def cert_der(path):
    """The DER bytes of the first certificate of a PEM file."""
    with open(path) as f:
        pem = f.read()
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[begin:end])


def cert_sha256(path):
    return hashlib.sha256(cert_der(path)).hexdigest()


def spki_sha256_b64(path):
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: what chromium's
    --ignore-certificate-errors-spki-list takes."""
    pub = _openssl("x509", "-in", path, "-noout", "-pubkey")
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                         capture_output=True, timeout=30, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def _plain_create_connection_fn():
    current = socket.create_connection
    return getattr(current, "plain", current)


_plain_create_connection = _plain_create_connection_fn()


def open_socket(base_url, timeout=5.0, source_address=None, ssl_context=None, cafile=None):
    """A connected socket to base_url's host and port: plain for http://, TLS with the
    handshake done (verified against `cafile`, default the test CA) for https://."""
    host, port = sse_client.split_url(base_url)
    s = _plain_create_connection((host, port), timeout, source_address)
    if not sse_client.is_https(base_url):
        return s
    if ssl_context is None:
        ssl_context = sse_client.tls_client_context(cafile or (tls_ca().ca_cert if _CA or TLS_MODE else None))
    return sse_client.wrap_tls(s, host, ssl_context)


def served_cert_sha256(base_url, timeout=5.0, ssl_context=None):
    """SHA-256 (hex) of the certificate a new TLS connection to base_url is given."""
    with open_socket(base_url, timeout, ssl_context=ssl_context) as s:
        return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def _install_tls_shim():
    """BROKER_TEST_TLS=1: socket.create_connection to a registered TLS server port does TLS.
    Returns the registry {port: CA file} (shared if this file is loaded twice)."""
    current = socket.create_connection
    if getattr(current, "tls_endpoints", None) is not None:
        return current.tls_endpoints
    endpoints = {}
    plain = current

    def create_connection(address, *args, **kwargs):
        s = plain(address, *args, **kwargs)
        host, port = address[0], address[1]
        cafile = endpoints.get(int(port)) if (host == "localhost" or str(host).startswith("127.")) \
            else None
        if cafile is None:
            return s
        return sse_client.wrap_tls(s, host, sse_client.tls_client_context(cafile))

    create_connection.plain = plain
    create_connection.tls_endpoints = endpoints
    socket.create_connection = create_connection
    return endpoints


_TLS_ENDPOINTS = _install_tls_shim() if TLS_MODE else {}

# BROKER_TEST_TLS=1: tests that make no sense over TLS, by node id suffix -> why.
TLS_MODE_SKIPS = {
    "test_insert_wire.py::test_pipelined_burst_is_not_left_waiting":
        "writes its socket from one thread while reading it from another, which a TLS socket does "
        "not support (OpenSSL: one thread per SSL object); tests/tls/test_tls.py::"
        "test_1000_pipelined_inserts_over_tls sends the same burst over TLS from one thread",
}


# BROKER_TEST_COMPOSE=1 (the compose deployment's gateway, tests/compose): likewise.
COMPOSE_MODE = os.environ.get("BROKER_TEST_COMPOSE") == "1"
COMPOSE_MODE_SKIPS = {
    "test_insert_wire.py::test_pipelined_burst_is_not_left_waiting":
        "the gateway passes pipelined requests on one at a time, and the offline deployment's store "
        "(the FerretDB stand-in in a container) syncs each insert in tens of ms: 1,000 of them cannot "
        "fit the test's 15-second bound, which is there to catch a hang; the split deployment runs "
        "it through nginx on the embedded store",
}


def pytest_collection_modifyitems(config, items):
    for mode, skips, name in ((TLS_MODE, TLS_MODE_SKIPS, "BROKER_TEST_TLS=1"),
                              (COMPOSE_MODE, COMPOSE_MODE_SKIPS, "BROKER_TEST_COMPOSE=1")):
        if not mode:
            continue
        for item in items:
            for suffix, why in skips.items():
                if item.nodeid.endswith(suffix):
                    item.add_marker(pytest.mark.skip(reason="%s: %s" % (name, why)))


def _asks_plain(args):
    """Whether the caller's flags turn --secure off (then BROKER_TEST_TLS does not apply)."""
    args = [str(a) for a in args]
    for i, a in enumerate(args):
        if a.startswith("--secure=") and a.split("=", 1)[1].lower() in ("false", "0", "no", "off"):
            return True
        if a == "--secure" and i + 1 < len(args) and args[i + 1].lower() in ("false", "0", "no", "off"):
            return True
    return False


# ---------------------------------------------------------------- the server

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The caller's environment without BROKER_* settings (they would change the server),
    plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(extra or {})
    return env


class User:
    def __init__(self, username, password, tenant_name, created):
        self.username = username
        self.password = password
        self.tenant_name = tenant_name
        self.created = created  # the user object create_user answered

    def basic(self):
        return basic_header(self.username, self.password)


class Broker:
    """A broker under test: a base URL, its secrets, and helpers to talk to it.
    Owns the process when the harness started it (proc is None for an external server)."""

    def __init__(self, base_url, admin_token, jwt_secret, jwt_expiry=DEFAULT_EXPIRY,
                 origin="*", proc=None, stderr_path=None, workdir=None, name="broker",
                 ca_path=None, tls_cert=None, tls_key=None, http_port=None):
        self.base_url = base_url
        # TLS: the CA requests verify against (https:// only); the pair given to the server;
        # its plain --http_port (None when not given or 0).
        self.ca_path = ca_path
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.http_port = http_port
        self.admin_token = admin_token
        self.jwt_secret = jwt_secret
        self.jwt_expiry = jwt_expiry
        self.origin = origin
        self.proc = proc
        self.stderr_path = stderr_path
        self.workdir = workdir
        self.name = name

    # -- raw HTTP
    def url(self, path):
        return self.base_url + path

    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        if self.ca_path and self.base_url.startswith("https:"):
            kw.setdefault("verify", self.ca_path)
        return requests.request(method, self.url(path), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def post_raw(self, path, raw, headers=None, **kw):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        return self.request("POST", path, data=raw, headers=hdrs, **kw)

    # -- user system
    def admin(self, path, **fields):
        """POST an admin endpoint with the right admin_token."""
        body = {"admin_token": self.admin_token}
        body.update(fields)
        return self.post(path, body)

    def create_user_raw(self, **fields):
        body = {"admin_token": self.admin_token}
        body.update(fields)
        return self.post("/create_user", body)

    def create_user(self, username=None, password=None, tenant_name=None, **extra):
        """Create a user (unique names by default) and insist on 200."""
        username = username if username is not None else uniq("user")
        password = password if password is not None else "pw-" + uuid.uuid4().hex[:12]
        tenant_name = tenant_name if tenant_name is not None else uniq("tenant")
        r = self.create_user_raw(username=username, password=password,
                                 tenant_name=tenant_name, **extra)
        created = assert_ok(r)
        return User(username, password, tenant_name, created)

    def login_raw(self, username, password):
        return self.post("/login", {"username": username, "password": password})

    def login(self, username, password):
        body = assert_ok(self.login_raw(username, password))
        assert isinstance(body.get("jwt"), str) and body["jwt"], "login answered %r" % body
        return body["jwt"]

    def verify(self, headers):
        return self.get("/verify", headers=headers)

    def healthy(self):
        try:
            r = self.get("/healthz", timeout=2)
            return r.status_code == 200
        except requests.RequestException:
            return False

    # -- process
    def alive(self):
        return self.proc is None or self.proc.poll() is None

    def stderr_text(self):
        if not self.stderr_path or not os.path.exists(self.stderr_path):
            return ""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, limit=8000):
        text = self.stderr_text()
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_GRACE seconds. Returns the exit code."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE)
        return self.proc.returncode


def spawn(args, env, workdir, tag="broker"):
    """Start the binary with `args`; stdout and stderr go to files in workdir."""
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail("broker binary not found or not executable: %s (build it, or set BROKER_BIN)"
                    % BROKER_BIN)
    stderr_path = os.path.join(workdir, tag + ".stderr")
    stdout_path = os.path.join(workdir, tag + ".stdout")
    with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
        proc = subprocess.Popen([BROKER_BIN] + list(args), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env, cwd=workdir)
    return proc, stderr_path


def wait_healthy(broker, timeout=STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not broker.alive():
            return False
        if broker.healthy():
            return True
        time.sleep(0.05)
    return False


def start_broker(extra_args=(), env=None, admin_token=None, jwt_secret=None, port=None,
                 port_flag=True, db_flag=True, secrets_flags=True, jwt_expiry=None,
                 origin="*", wait=True, tag="broker", limits=False, tls=None, cert=None,
                 key=None, http_port=0):
    """Start the broker on a free loopback port with a fresh --db; wait for /healthz.

    port_flag=False leaves --port out (the port then comes from env, e.g. BROKER_PORT).
    secrets_flags=False leaves --admin_token/--jwt_secret out (server defaults or env).
    limits=False turns the limits on failed credentials off: this suite fails logins and
    admin tokens on purpose, hundreds a minute from one address; the tests of the limits
    pass limits=True (the defaults) or their own flags.
    tls=True serves HTTPS: --secure=true --auto_cert=false --key_path KEY --cert_path CERT
    (cert/key: default the test CA's server pair) and --http_port=<http_port> (0 = no plain
    listener; None leaves the flag out); base_url is then https://. tls=None: as
    BROKER_TEST_TLS says, unless extra_args turn --secure off. The TLS flags come before
    extra_args, so a test's own flags win.
    """
    if tls is None:
        tls = TLS_MODE and not _asks_plain(extra_args)
    tls_args, ca_path = [], None
    if tls:
        ca = tls_ca()
        ca_path = ca.ca_cert
        cert = cert or ca.server_cert
        key = key or ca.server_key
        tls_args = ["--secure=true", "--auto_cert=false", "--key_path", key, "--cert_path", cert]
        if http_port is not None:
            tls_args.append("--http_port=%d" % http_port)
    admin_token = admin_token or "adm-" + uuid.uuid4().hex
    jwt_secret = jwt_secret or "jwt-" + uuid.uuid4().hex
    workdir = tempfile.mkdtemp(prefix="broker-bb-")
    _WORKDIRS.append(workdir)
    last_err = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        listen_port = port or free_port()
        args = []
        if port_flag:
            args += ["--port", str(listen_port)]
        if db_flag:
            # A path that does not exist yet: the server must create what it needs.
            args += ["--db", os.path.join(workdir, "db")]
            if STORE_URI_BASE:
                args += ["--store", STORE_URI_BASE.rstrip("/") + "/bb_" + uuid.uuid4().hex[:12]]
        if secrets_flags:
            args += ["--admin_token", admin_token, "--jwt_secret", jwt_secret]
        if jwt_expiry is not None:
            args += ["--jwt_expiry", str(jwt_expiry)]
        if not limits:
            args += ["--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0"]
        args += tls_args
        args += list(extra_args)
        proc, stderr_path = spawn(args, clean_env(env), workdir, tag)
        b = Broker("%s://127.0.0.1:%d" % ("https" if tls else "http", listen_port), admin_token,
                   jwt_secret, jwt_expiry or DEFAULT_EXPIRY, origin, proc, stderr_path, workdir, tag,
                   ca_path=ca_path, tls_cert=cert if tls else None, tls_key=key if tls else None,
                   http_port=(http_port or None) if tls else None)
        if tls:
            _TLS_ENDPOINTS[listen_port] = ca_path
        _ACTIVE.append(b)
        if not wait:
            return b
        if wait_healthy(b):
            return b
        b.stop()
        last_err = b.stderr_tail()
        if port is not None or "in use" not in last_err.lower():
            break
    pytest.fail("broker did not answer /healthz within %.0f s (args %r, exit %r)\nstderr:\n%s"
                % (STARTUP_TIMEOUT, args, b.proc.returncode, last_err))


def external_broker():
    return Broker(EXTERNAL_URL,
                  os.environ.get("BROKER_TEST_ADMIN_TOKEN", "letmein"),
                  os.environ.get("BROKER_TEST_JWT_SECRET", "secret"),
                  int(os.environ.get("BROKER_TEST_JWT_EXPIRY", str(DEFAULT_EXPIRY))),
                  os.environ.get("BROKER_TEST_ORIGIN", "*"),
                  name="external")


def check_clean_exit(b, code):
    """A server stopped with SIGTERM must exit 0: under ASan/LSan a leak or any
    sanitizer report at shutdown makes the exit code non-zero."""
    if code not in (0, None):
        pytest.fail("broker did not exit cleanly on SIGTERM (exit %r); stderr:\n%s"
                    % (code, b.stderr_tail()))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def broker():
    """The server for one test module (external one when BROKER_TEST_BASE_URL is set)."""
    if EXTERNAL_URL:
        b = external_broker()
        assert b.healthy(), "BROKER_TEST_BASE_URL %s does not answer /healthz" % EXTERNAL_URL
        yield b
        return
    b = start_broker(tag="module")
    yield b
    crashed = not b.alive()
    code = b.stop()
    if crashed:
        pytest.fail("broker exited during the module (exit %r); stderr:\n%s"
                    % (b.proc.returncode, b.stderr_tail()))
    check_clean_exit(b, code)


@pytest.fixture(scope="module")
def broker_factory():
    """start(extra_args=(), env=None, **kw) -> Broker with extra flags/env; skips when
    BROKER_TEST_BASE_URL is set. Everything started is stopped at the end of the module."""
    started = []

    def start(extra_args=(), env=None, **kw):
        flags = [str(a) for a in extra_args] + ["%s=%s" % kv for kv in sorted(kw.items())]
        needs_own_server("this test starts a server with its own flags (%s)" % " ".join(flags))
        kw.setdefault("tag", "factory%d" % len(started))
        b = start_broker(extra_args, env, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        check_clean_exit(b, code)


@pytest.fixture(scope="module")
def shared_user(broker):
    """One user for read-only tests (saves Argon2 work)."""
    return broker.create_user(email="shared@example.com", data={"k": [1, 2]})


@pytest.fixture(scope="module")
def shared_jwt(broker, shared_user):
    return broker.login(shared_user.username, shared_user.password)


@pytest.fixture(scope="session", autouse=True)
def _remove_workdirs():
    yield
    for b in list(_ACTIVE):
        b.stop()
    if os.environ.get("BROKER_TEST_KEEP") != "1":
        for d in _WORKDIRS:
            shutil.rmtree(d, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in list(_ACTIVE):
            rep.sections.append(("broker stderr: %s (%s)" % (b.name, b.base_url),
                                 b.stderr_tail() or "(empty)"))


# ---------------------------------------------------------------- status log (opt-in)
# When BROKER_STATUS_LOG names a file, every HTTP answer this suite receives is appended to it
# as one JSON line {"method", "path", "status"} (path without its query string).
# tests/api/test_openapi.py reads it after this suite has run, to check that docs/openapi.yaml
# documents every status the server really gives and that each documented one is really seen.
# Recorded: everything sent through requests (HTTPAdapter.send), direct http.client use, and
# sse_client.SSEClient's raw sockets (when its request line is known).  Wrapped once, at import.

STATUS_LOG = os.environ.get("BROKER_STATUS_LOG", "")


def _install_status_log(log_path):
    import http.client
    import re
    import threading
    import urllib.parse

    import requests.adapters
    import sse_client

    if getattr(requests.adapters.HTTPAdapter.send, "_status_logged", False):
        return  # this module imported a second time: already wrapped
    lock = threading.Lock()
    local = threading.local()  # .in_requests: http.client calls made by requests itself

    def record(method, target, status):
        if not method or not target or status is None:
            return
        path = urllib.parse.urlsplit(target).path or target.split("?", 1)[0]
        line = json.dumps({"method": method.upper(), "path": path, "status": int(status)}) + "\n"
        with lock, open(log_path, "a", encoding="utf-8") as f:
            f.write(line)

    adapter_send = requests.adapters.HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        local.in_requests = True
        try:
            response = adapter_send(self, request, *args, **kwargs)
        finally:
            local.in_requests = False
        record(request.method, request.url, response.status_code)
        return response

    send._status_logged = True
    requests.adapters.HTTPAdapter.send = send

    putrequest = http.client.HTTPConnection.putrequest
    getresponse = http.client.HTTPConnection.getresponse

    def logged_putrequest(self, method, url, *args, **kwargs):
        self._status_log_request = (method, url)
        return putrequest(self, method, url, *args, **kwargs)

    def logged_getresponse(self, *args, **kwargs):
        response = getresponse(self, *args, **kwargs)
        if not getattr(local, "in_requests", False):
            record(*getattr(self, "_status_log_request", (None, None)), response.status)
        return response

    http.client.HTTPConnection.putrequest = logged_putrequest
    http.client.HTTPConnection.getresponse = logged_getresponse

    request_line = re.compile(rb"([A-Z]{1,16}) (/[^ \r\n]*) HTTP/1\.[01]\r?\n")
    sse_open, sse_open_raw = sse_client.SSEClient.open.__func__, sse_client.SSEClient.open_raw.__func__
    parse_head = sse_client.SSEClient._parse_head

    def logged_open(cls, base_url, path="/sse", headers=None, method="GET", *args, **kwargs):
        c = sse_open(cls, base_url, path, headers, method, *args, **kwargs)
        c._status_log_request = (method, path)
        return c

    def logged_open_raw(cls, base_url, raw=b"", *args, **kwargs):
        c = sse_open_raw(cls, base_url, raw, *args, **kwargs)
        m = request_line.match(raw or b"")
        if m:  # garbage and byte-by-byte heads name no request: not recorded
            c._status_log_request = (m.group(1).decode(), m.group(2).decode("latin-1"))
        return c

    def logged_parse_head(self, raw):
        parse_head(self, raw)
        record(*getattr(self, "_status_log_request", (None, None)), self.status)

    sse_client.SSEClient.open = classmethod(logged_open)
    sse_client.SSEClient.open_raw = classmethod(logged_open_raw)
    sse_client.SSEClient._parse_head = logged_parse_head


if STATUS_LOG:
    _install_status_log(STATUS_LOG)
