"""Fixtures shared by the JS client's suites (Node and browser)."""
import shutil

import pytest

import jsclient_harness as h


@pytest.fixture(scope="module")
def broker():
    """A real all-in-one broker on a free loopback port, its own temp store, for one module."""
    workdir = h.new_workdir()
    b = h.Broker(workdir)
    try:
        b.start()
        yield b
    finally:
        b.stop()
        shutil.rmtree(workdir, ignore_errors=True)
