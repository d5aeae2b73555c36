import os
import sys

import pytest

if os.geteuid() != 0:
    # Most tests install real filters in forked children, which only needs no_new_privs;
    # a few (namespaces, containers) need root and mark themselves.
    pass


def pytest_report_header(config):
    return f"kernel {os.uname().release}, uid {os.geteuid()}, python {sys.version.split()[0]}"


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(params=["off", "on"], ids=["landlock-off", "landlock-on"])
def landlock(request):
    """Run the test twice: handlers_support.run() launches without, then with, the Landlock wall that
    ``sysgate run --landlock=on`` derives from the handlers' rules. The mode is the fixture's value."""
    import handlers_support

    handlers_support.LANDLOCK["mode"] = request.param
    try:
        yield request.param
    finally:
        handlers_support.LANDLOCK["mode"] = "off"
