"""OCI seccomp profile documents for the strict-input and fuzz tests of the policy loaders."""
from __future__ import annotations

import copy

RULE = {"names": ["read"], "action": "SCMP_ACT_ERRNO"}
BASE = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [RULE]}


def with_(path, value, base=BASE):
    """``base`` with the field at ``path`` (keys and list indexes) set to ``value``."""
    doc = copy.deepcopy(base)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc
