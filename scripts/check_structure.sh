#!/usr/bin/env bash
# Checks that the services stay apart (issue 14).
#   scripts/check_structure.sh [ROOT]      ROOT: the source tree (default: this repository)
# Exit 0 and "structure ok" when it holds; exit 1 and the offending lines otherwise.
#
# Rules:
#  1. A file under services/<A>/ includes no header that lives in services/<B>/, B != A
#     (found next to the including file, as services/<path>, or as services/<B>/<path>; headers
#     of lib/, lib/store/, lib/bus/ and proto/ are shared and always allowed).
#  2. services/broker/ (the all-in-one composer) may include the PUBLIC header of any service and
#     nothing else of it. A service's public header is the one named after its folder, at the
#     top of that folder: services/<B>/<B>.h (services/auth/auth.h, services/ingest/ingest.h,
#     services/stream/stream.h, ...). The list found in ROOT is printed on failure.
#  3. CMakeLists.txt (and services/*/CMakeLists.txt) never links a service library svc_<A>, or a
#     service's own program broker-<A>, to another service's library svc_<B>, B != A. Only the
#     all-in-one `broker`, the tests and the fuzz targets link several services.
set -uo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -d "$ROOT/services" ]; then
  echo "check_structure: no services/ folder under $ROOT" >&2
  exit 2
fi
exec python3 - "$ROOT" <<'PYEOF'
import glob
import os
import re
import sys

root = os.path.abspath(sys.argv[1])
services_dir = os.path.join(root, "services")
services = sorted(d for d in os.listdir(services_dir) if os.path.isdir(os.path.join(services_dir, d)))
shared_dirs = [os.path.join(root, d) for d in ("lib", "lib/store", "lib/bus", "proto")]
public = {s: "services/%s/%s.h" % (s, s) for s in services
          if os.path.isfile(os.path.join(services_dir, s, s + ".h"))}
COMPOSER = "broker"
bad = []


def rel(p):
    return os.path.relpath(p, root)


def service_of(path):
    """The service folder a file lives in, or None."""
    r = rel(os.path.abspath(path)).split(os.sep)
    return r[1] if len(r) >= 3 and r[0] == "services" else None


def resolve(including, name):
    """Where #include `name` in file `including` lands: a list of candidate paths (the one
    found next to the including file or in the shared folders wins alone)."""
    here = os.path.normpath(os.path.join(os.path.dirname(including), name))
    if os.path.isfile(here):
        return [here]
    for d in shared_dirs:
        p = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(p):
            return [p]
    found = []
    p = os.path.normpath(os.path.join(services_dir, name))
    if os.path.isfile(p):
        found.append(p)
    for s in services:
        p = os.path.normpath(os.path.join(services_dir, s, name))
        if os.path.isfile(p):
            found.append(p)
    return found


INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
for a in services:
    for dirpath, _dirs, files in os.walk(os.path.join(services_dir, a)):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    lines = fh.readlines()
            except OSError:
                continue
            for n, line in enumerate(lines, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                for target in resolve(path, m.group(2)):
                    b = service_of(target)
                    if b is None or b == a:
                        continue
                    if a == COMPOSER and rel(target) == public.get(b):
                        continue
                    why = ("not the public header of service '%s'" % b if a == COMPOSER
                           else "lives in service '%s'" % b)
                    bad.append("%s:%d: %s  -> %s (%s)" % (rel(path), n, line.strip(), rel(target), why))

# CMake: target_link_libraries(<svc_A | broker-A> ... svc_B ...)
cmake_files = [os.path.join(root, "CMakeLists.txt")] + sorted(
    glob.glob(os.path.join(services_dir, "*", "CMakeLists.txt")))
CALL = re.compile(r"target_link_libraries\s*\(([^)]*)\)", re.S)
for cf in cmake_files:
    if not os.path.isfile(cf):
        continue
    with open(cf, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    # comments out, keeping line numbers
    text_nc = re.sub(r"#[^\n]*", lambda m: " " * len(m.group(0)), text)
    for m in CALL.finditer(text_nc):
        args = m.group(1).split()
        if not args:
            continue
        tgt = args[0]
        tm = re.fullmatch(r"(svc_|broker-)(\S+)", tgt)
        if not tm:
            continue
        a = tm.group(2)
        for lib in args[1:]:
            lm = re.fullmatch(r"svc_(\S+)", lib)
            if not lm or lm.group(1) == a:
                continue  # the same service (literal, or the same ${var} on both sides)
            n = text.count("\n", 0, m.start()) + 1
            call = " ".join(m.group(0).split())
            bad.append("%s:%d: %s  (%s links service library %s)" % (rel(cf), n, call, tgt, lib))

if bad:
    print("check_structure: services must not reach into each other (issue 14):")
    for line in bad:
        print("  " + line)
    print("public headers (the only ones services/%s/ may include): %s"
          % (COMPOSER, ", ".join(sorted(public.values())) or "none"))
    sys.exit(1)
print("structure ok (%d services; public headers: %s)"
      % (len(services), ", ".join(sorted(public.values())) or "none"))
PYEOF
