"""pytest glue for the console tests: remembers each test's outcome on its node, so that the
browser fixture in test_console.py can keep a screenshot of a failed test's page."""
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
