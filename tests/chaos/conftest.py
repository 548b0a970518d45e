"""The chaos tests reuse the front-door harness (tests/door/conftest.py: start_door, stop_door, the
throwaway certificate), loaded under the module name `door_harness`."""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _load_door_harness():
    if "door_harness" in sys.modules:
        return sys.modules["door_harness"]
    path = os.path.join(HERE, "..", "door", "conftest.py")
    spec = importlib.util.spec_from_file_location("door_harness", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["door_harness"] = mod
    spec.loader.exec_module(mod)
    return mod


dh = _load_door_harness()
tls_files = dh.tls_files
_remove_workdirs = dh._remove_workdirs
pytest_runtest_makereport = dh.pytest_runtest_makereport
