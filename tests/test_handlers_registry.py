"""Handler configs from JSON: any value for any option builds the handler or raises one
SysgateError naming the handler and option, never another exception."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sysgate.errors import SysgateError
from sysgate.handlers import registry

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
SECTIONS = [(name, option) for name in registry.names() if name != "audit"
            for option in registry.describe_options(name)]
AUDIT = ["summary", "wrap", "strings", "max_string"]          # not "log": a string there opens a file


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SECTIONS), JSON)
def test_any_option_value_builds_or_names_the_option(section, value):
    name, option = section
    try:
        handler = registry.create(name, {option: value})
    except SysgateError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
    else:
        handler.close()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(AUDIT), JSON)
def test_any_audit_value_builds_or_names_the_option(option, value):
    try:
        built = registry.build_handlers(None, {"audit": {option: value, "log": None}})
    except SysgateError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
    else:
        built.finish()


def test_wrong_shape_names_handler_option_and_value():
    cases = {("identity", "hostname", 5): "handler 'identity': option 'hostname' must be a string or null, not 5",
             ("fs", "rules", 5): "handler 'fs': option 'rules' must be a list of strings, not 5",
             ("time", "start", float("nan")): "option 'start' must be a number of seconds"}
    for (name, option, value), message in cases.items():
        try:
            registry.create(name, {option: value})
        except SysgateError as exc:
            assert message in str(exc), str(exc)
        else:
            raise AssertionError(f"{name}.{option}={value!r} was accepted")


def test_right_shapes_are_accepted():
    for name, config in {"identity": {"hostname": "box", "release": None}, "fs": {"rules": ["allow read /usr/**"]},
                         "net": {"rules": ["allow connect unix:/run/**"], "errno_denied": "EPERM"},
                         "container": {"devices": ["1:3", [1, 5]], "mkdir": ["/run/**"],
                                       "mounts": ["tmpfs", {"fstype": "tmpfs", "target": "/mnt/**"}]},
                         "time": {"start": 0, "step": 0.5}, "random": {"seed": "s"}}.items():
        registry.create(name, config).close()


def test_wire_refuses_unknown_sections_and_names_in_one_line():
    """wire is the one place a policy meets its handlers: a config section or a notify(NAME)
    that is no handler's stops it before anything is routed, in one line."""
    import pytest
    from sysgate.policy.parser import parse_policy
    from sysgate.supervisor import Supervisor

    policy = parse_policy("default: allow\nopenat: notify(fs)\n")
    with Supervisor() as sup:
        unknown = r"unknown section\(s\) fss: unknown handler 'fss'.*did you mean 'fs'"
        with pytest.raises(SysgateError, match=unknown) as exc:
            registry.wire(sup, policy, {"fss": {}})
        assert "\n" not in str(exc.value)
        with pytest.raises(SysgateError, match="unknown handler 'nosuch'"):
            registry.wire(sup, parse_policy("default: allow\nopenat: notify(nosuch)\n"), {})
        warnings = []
        built = registry.wire(sup, policy, {"fs": {"rules": ["allow read /usr/**"]}, "time": {}}, warn=warnings.append)
        assert list(built.handlers) == ["fs"] and warnings == [
            "sysgate: warning: policy 'policy' does not use handler(s) time"], warnings
        built.finish()
