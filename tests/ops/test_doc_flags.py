"""The shipped text files claim no flag the binaries do not have.

Every `--flag` spelled in README.md, SECURITY.md, docs/, deploy/ and the JS client's README
must be listed by the `--help` of one of the binaries (the all-in-one and the split services),
unless it belongs to another program named on the same line (docker's --scale, useradd's
--system, ...): those are listed below with the program, and each entry must still be used, so
the list cannot quietly grow into a hiding place. The flag table of README.md
must also give each flag the default its --help prints.

Environment: BROKER_BIN (default build/broker); the split services are the broker-* binaries
beside it, and every one of them must be there.
"""
import os
import re
import subprocess

import pytest

from conftest import REPO, clean_env

SHIPPED = ["README.md", "SECURITY.md", "docs", "deploy", os.path.join("clients", "js", "README.md")]
BINARIES = ["broker", "broker-auth", "broker-ingest", "broker-stream", "broker-certd", "broker-bus"]

# flag -> what must be on its line: the program the flag belongs to.
FOREIGN = {
    "scale": r"docker compose|docker-compose|`--scale (stream|ingest)=\d",
    "force-recreate": r"docker compose|docker-compose",
    "no-deps": r"docker compose|docker-compose",
    "rm": r"docker run",
    "quick": r"bench/run\.sh",
    "tls": r"bench/run\.sh",
    "conns": r"bench/capacity\.py",
    "workers": r"bench/capacity\.py",
    "test": r"\bnode --test\b",
    "offline": r"\bnpm install\b",
    "net": r"\bunshare --net\b",
    "now": r"\bsystemctl\b",
    "system": r"\b(groupadd|useradd)\b",
    "gid": r"\b(groupadd|useradd)\b",
    "uid": r"\buseradd\b",
    "home-dir": r"\buseradd\b",
    "no-create-home": r"\buseradd\b",
    "shell": r"\buseradd\b",
    "no-install-recommends": r"\bapt-get install\b",
    "interval": r"^HEALTHCHECK\b",
    "timeout": r"^HEALTHCHECK\b",
    "retries": r"^HEALTHCHECK\b",
    "start-period": r"^HEALTHCHECK\b",
    "namespace": r"\b(helm|kubectl)\b",
    "create-namespace": r"\bhelm\b",
    "set": r"\bhelm\b",
    "set-file": r"\bhelm\b",
    "from-file": r"\bkubectl\b",
    "strict": r"\bhelm lint\b",
}
FLAG = re.compile(r"(?<![A-Za-z0-9_-])--([a-z][a-z0-9_-]*)")


def shipped_lines():
    """(relative path, line number, line) of every text file shipped."""
    paths = []
    for entry in SHIPPED:
        full = os.path.join(REPO, entry)
        assert os.path.exists(full), "shipped file missing: %s" % entry
        if os.path.isdir(full):
            for root, _dirs, files in os.walk(full):
                paths += [os.path.join(root, f) for f in sorted(files)]
        else:
            paths.append(full)
    for path in sorted(paths):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue  # not text
        for n, line in enumerate(text.splitlines(), 1):
            yield os.path.relpath(path, REPO), n, line


@pytest.fixture(scope="module")
def helps():
    """{binary: its --help text}."""
    bindir = os.path.dirname(os.path.abspath(os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))))
    out = {}
    for name in BINARIES:
        path = os.path.join(bindir, name)
        assert os.access(path, os.X_OK), "%s is missing (make build)" % path
        p = subprocess.run([path, "--help"], env=clean_env(), capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, "%s --help: %s %s" % (name, p.returncode, p.stderr)
        out[name] = p.stdout
    return out


def help_flags(text):
    return set(re.findall(r"^\s+--([a-z0-9_]+)\b", text, re.M))


def help_defaults(text):
    """{flag: the default --help prints} ("" for an empty one)."""
    out = {}
    for m in re.finditer(r"^\s+--([a-z0-9_]+) .*\n\s+default: (.*?)(?: \(true/false\))?  env: ", text, re.M):
        out[m.group(1)] = "" if m.group(2) == "(empty)" else m.group(2)
    return out


@pytest.fixture(scope="module")
def known_flags(helps):
    flags = set()
    for text in helps.values():
        flags |= help_flags(text)
    assert {"port", "secure", "http_port", "help", "version"} <= flags, sorted(flags)
    return flags


def unknown_flags(lines, known_flags):
    unknown = []
    for path, n, line in lines:
        for m in FLAG.finditer(line):
            name = m.group(1)
            if name in known_flags:
                continue
            if name in FOREIGN and re.search(FOREIGN[name], line.strip()):
                continue
            unknown.append("%s:%d: --%s   %s" % (path, n, name, line.strip()[:120]))
    return unknown


def test_every_flag_in_the_shipped_files_exists(known_flags):
    unknown = unknown_flags(shipped_lines(), known_flags)
    assert not unknown, "flags no binary's --help lists:\n" + "\n".join(unknown)


def test_foreign_flags_are_all_still_used():
    used = set()
    for _path, _n, line in shipped_lines():
        for m in FLAG.finditer(line):
            if m.group(1) in FOREIGN and re.search(FOREIGN[m.group(1)], line.strip()):
                used.add(m.group(1))
    assert set(FOREIGN) == used, "entries of FOREIGN no file uses: %s" % sorted(set(FOREIGN) - used)


def test_the_check_catches_a_made_up_flag(known_flags):
    """The check itself: a flag no binary has, a hyphenated spelling, and a foreign flag off
    its program's line are reported; real and foreign flags in place are not."""
    lines = [("x.md", 1, "build/broker --secure --https_port 443 --http-port 80"),
             ("x.md", 2, "build/broker --port 8080 --scale 3"),
             ("x.md", 3, "docker compose up -d --scale stream=3; `broker --help`")]
    assert [u.split("   ")[0] for u in unknown_flags(lines, known_flags)] == [
        "x.md:1: --https_port", "x.md:1: --http-port", "x.md:2: --scale"]


def test_every_binary_has_the_shared_flags(helps):
    """The split services read the same flag table: --help of each lists the common flags."""
    for name, text in helps.items():
        assert {"port", "bind", "log_level", "help", "version"} <= help_flags(text), (name, text[:500])


def table_defaults(relpath):
    """{flag: default cell} of the markdown flag tables of a file (rows `| `--flag` | ... |`)."""
    out = {}
    with open(os.path.join(REPO, relpath), encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3:
                continue
            names = re.findall(r"`--([a-z0-9_]+)`", cells[0])
            if not names or re.sub(r"[`\s/]|--[a-z0-9_]+", "", cells[0]):
                continue
            defaults = [d.strip() for d in cells[1].split(" / ")] if len(names) > 1 else [cells[1]]
            for name, d in zip(names, defaults):
                out[name] = d
    return out


# Defaults a table states in words rather than as --help prints them.
WORDED = {"acme_directory": "Let's Encrypt production"}


def test_flag_table_gives_the_help_defaults(helps):
    relpath = "README.md"
    table = table_defaults(relpath)
    assert len(table) > 30, table  # the full table: a parser that found nothing checks nothing
    defaults = {}
    for text in helps.values():
        defaults.update(help_defaults(text))
    wrong = []
    for name, cell in table.items():
        assert name in defaults, "%s: --%s is in the table, not in --help" % (relpath, name)
        want = defaults[name]
        text = cell.replace("`", "")
        if name in WORDED:
            ok = WORDED[name] in text
        elif want == "":
            ok = text.lower() in ("empty", "none", "")
        else:
            ok = re.search(r"(?<![\w.])%s(?![\w.])" % re.escape(want), text) is not None
        if not ok:
            wrong.append("--%s: the table says %r, --help %r" % (name, cell, want))
    assert not wrong, "%s:\n%s" % (relpath, "\n".join(wrong))
