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
