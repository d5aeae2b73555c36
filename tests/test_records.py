"""sysgate.records.Record behaves as the dataclasses it replaces in the policy model, the
architecture table and the kernel ABI (frozen ones and the mutable Policy)."""
from __future__ import annotations

import copy
import pickle

import pytest

from sysgate.arch import table
from sysgate.kernel.abi import SeccompData
from sysgate.policy.model import ALLOW, Action, And, Cmp, Policy, Rule
from sysgate.records import replace


def test_frozen_records_compare_hash_and_refuse_assignment():
    assert Cmp(0, "==", 1) == Cmp(arg=0, op="==", value=1) and hash(Cmp(0, "==", 1)) == hash(Cmp(0, "==", 1))
    assert Cmp(0, "==", 1) != Cmp(0, "==", 2) and Cmp(0, "==", 1) != ("x",)
    assert len({Rule("read", ALLOW), Rule("read", ALLOW), Rule("write", ALLOW)}) == 2
    with pytest.raises(AttributeError):
        ALLOW.kind = "errno"
    with pytest.raises(AttributeError):
        del ALLOW.kind
    assert repr(Action("errno", 1)) == "Action(kind='errno', data=1, handler=None)"
    assert SeccompData(1, 2) == SeccompData(1, 2, 0, (0,) * 6)
    assert table.get("x86_64") == table.ARCHES[0] and table.get("x86_64").byteorder == "little"


def test_init_checks_arguments_and_runs_post_init():
    with pytest.raises(TypeError):
        Action()
    with pytest.raises(TypeError):
        Action("allow", 0, None, 1)
    with pytest.raises(TypeError):
        Action("allow", kind="allow")
    with pytest.raises(TypeError):
        Action("allow", bogus=1)
    with pytest.raises(ValueError):
        Action("frob")
    assert Cmp(0, "==", -1, width=32).value == 0xFFFFFFFF     # __post_init__ masks


def test_the_mutable_policy():
    a, b = Policy(), Policy()
    assert a.rules is not b.rules and a == b
    a.rules.append(Rule("read", ALLOW))
    a.name = "x"
    assert a != b
    b.rules.append(Rule("read", ALLOW))
    b.name, b.warnings = "x", ["not compared"]
    assert a == b
    with pytest.raises(TypeError):
        hash(a)


def test_replace_copy_pickle_match():
    rule = Rule("read", ALLOW, And((Cmp(0, "==", 1),)))
    other = replace(rule, action=Action("errno", 1))
    assert (other.syscall, other.action, other.condition) == ("read", Action("errno", 1), rule.condition)
    with pytest.raises(TypeError):
        replace(rule, bogus=1)
    with pytest.raises(ValueError):
        replace(ALLOW, kind="frob")
    policy = Policy(rules=[rule], warnings=["w"])
    assert copy.deepcopy(policy) == policy and pickle.loads(pickle.dumps(policy)) == policy
    assert pickle.loads(pickle.dumps(rule)) == rule
    match rule:
        case Rule(name, Action("allow")):
            assert name == "read"
        case _:
            pytest.fail("no match")
