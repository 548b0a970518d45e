"""scripts/check_structure.sh: the services stay apart (issue 14).

The script passes on this repository, and fails (exit 1, naming the offending line) on small
fabricated trees that break each rule: a service including another service's header, the
all-in-one composer including a service's private header, and CMake linking one service library
(or one service's program) to another's. A clean fabricated tree passes, so the script can pass.
"""

import os
import subprocess

import pytest

from conftest import HERE

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(REPO, "scripts", "check_structure.sh")

CLEAN_CMAKE = """\
add_library(brokercore STATIC lib/log.c)
foreach(svc auth ingest stream)
  add_library(svc_${svc} STATIC services/${svc}/${svc}.c)
  target_link_libraries(svc_${svc} PUBLIC brokercore)
  add_executable(broker-${svc} services/${svc}/main.c)
  target_link_libraries(broker-${svc} PRIVATE svc_${svc})
endforeach()
add_executable(broker services/broker/main.c)
target_link_libraries(broker PRIVATE svc_auth svc_ingest svc_stream)
# a comment naming target_link_libraries(svc_stream PUBLIC svc_ingest) is not a link
add_executable(test_x tests/unit/test_x.c)
target_link_libraries(test_x PRIVATE brokercore svc_auth svc_ingest svc_stream)
"""

CLEAN_FILES = {
    "lib/log.h": "#pragma once\n",
    "lib/log.c": '#include "log.h"\n',
    "proto/proto_bus.h": "#pragma once\n",
    "services/auth/auth.h": '#pragma once\n#include "log.h"\n',
    "services/auth/auth.c": '#include "auth.h"\n#include <stdio.h>\n',
    "services/auth/main.c": '#include "auth.h"\n',
    "services/ingest/ingest.h": "#pragma once\n",
    "services/ingest/ingest_queue.h": "#pragma once\n",
    "services/ingest/ingest.c": '#include "ingest.h"\n#include "ingest_queue.h"\n#include "proto_bus.h"\n',
    "services/ingest/main.c": '#include "ingest.h"\n#include "log.h"\n',
    "services/stream/stream.h": "#pragma once\n",
    "services/stream/stream_internal.h": '#pragma once\n#include "stream.h"\n',
    "services/stream/stream.c": '#include "stream_internal.h"\n',
    "services/stream/main.c": '#include "stream.h"\n',
    "services/broker/main.c": '#include "auth.h"\n#include "ingest.h"\n#include "stream.h"\n'
                              '#include "proto_bus.h"\n',
}


def make_tree(root, changes=None, cmake=CLEAN_CMAKE):
    files = dict(CLEAN_FILES)
    files.update(changes or {})
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(os.path.join(root, "CMakeLists.txt"), "w") as f:
        f.write(cmake)
    return str(root)


def run(root=None):
    args = [SCRIPT] + ([root] if root else [])
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def test_repository_structure_holds():
    code, out = run()
    assert code == 0, "scripts/check_structure.sh fails on this repository:\n" + out


def test_clean_fake_tree_passes(tmp_path):
    code, out = run(make_tree(tmp_path))
    assert code == 0, out


@pytest.mark.parametrize("rel,text,expect", [
    ("services/ingest/main.c", '#include "ingest.h"\n#include "stream.h"\n',
     "services/ingest/main.c:2"),
    ("services/stream/stream.c", '#include "stream_internal.h"\n# include <ingest.h>\n',
     "services/stream/stream.c:2"),
    ("services/auth/auth.c", '#include "auth.h"\n#include "stream/stream_internal.h"\n',
     "services/auth/auth.c:2"),
    ("services/ingest/ingest.c", '#include "../auth/auth.h"\n', "services/ingest/ingest.c:1"),
    ("services/broker/main.c", '#include "auth.h"\n#include "stream_internal.h"\n',
     "services/broker/main.c:2"),
], ids=["ingest_includes_stream", "stream_includes_ingest_angle", "service_path_include",
        "relative_path_include", "composer_private_header"])
def test_cross_include_fails(tmp_path, rel, text, expect):
    code, out = run(make_tree(tmp_path, {rel: text}))
    assert code == 1, "expected exit 1 for a cross include in %s, got %d:\n%s" % (rel, code, out)
    assert expect in out, "the offending line %s is not named:\n%s" % (expect, out)


@pytest.mark.parametrize("extra,expect", [
    ("target_link_libraries(svc_stream PUBLIC svc_ingest)\n", "svc_stream links service library svc_ingest"),
    ("target_link_libraries(broker-ingest\n  PRIVATE svc_stream)\n", "broker-ingest links service library svc_stream"),
    ("foreach(svc auth)\n  target_link_libraries(svc_${svc} PUBLIC svc_ingest)\nendforeach()\n",
     "links service library svc_ingest"),
], ids=["svc_to_svc", "program_to_other_svc_multiline", "variable_target"])
def test_cross_link_fails(tmp_path, extra, expect):
    code, out = run(make_tree(tmp_path, cmake=CLEAN_CMAKE + extra))
    assert code == 1, "expected exit 1 for a cross link, got %d:\n%s" % (code, out)
    assert expect in out and "CMakeLists.txt:" in out, out
