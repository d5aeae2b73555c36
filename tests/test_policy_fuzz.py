"""Fuzzing the policy inputs: random and adversarial text, JSON and bytes. Through the Python
API (many cases) only SysgateError may escape; through `python -m sysgate policy check`
(a few cases) the exit status is 0, 1 or 2 and an error is one `sysgate: error:` line."""
import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgate.errors import SourceError, SysgateError
from sysgate.policy_loader import load_policy, load_text
from sysgate.policy.oci import export_oci, import_oci
from sysgate.policy.parser import parse_policy
from sysgate.policy.printer import format_policy
from support.profiles import with_

FIELDS = ["defaultAction", "defaultErrnoRet", "defaultErrno", "architectures", "archMap", "architecture",
          "subArchitectures", "flags", "listenerPath", "listenerMetadata", "syscalls", "names", "name", "action",
          "errnoRet", "errno", "args", "index", "value", "valueTwo", "op", "comment", "includes", "excludes", "caps",
          "arches", "minKernel", "linux", "seccomp", "ociVersion", "apiVersion", "kind", "metadata", "spec",
          "baseProfileName", "disabled", "syscall"]
WORDS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_NOTIFY", "SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ",
         "SCMP_ARCH_X86_64", "SCMP_ARCH_PPC", "amd64", "read", "openat", "nosuch", "CAP_SYS_ADMIN", "SYS_ADMIN",
         "4.8", "banana", "SeccompProfile", "security-profiles-operator.x-k8s.io/v1beta1", "EPERM", "",
         "SECCOMP_FILTER_FLAG_LOG", "\x00", "\ud800", "é"]
HUGE = st.sampled_from([2 ** 64, 2 ** 64 - 1, -1, -(2 ** 63), 10 ** 100, 2 ** 31, 4095, 4096, 65536])
SCALARS = (st.none() | st.booleans() | st.integers(-5, 70_000) | HUGE | st.floats(allow_nan=True)
           | st.sampled_from(WORDS) | st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=5), max_leaves=20)

VALID = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["SCMP_ARCH_X86"],
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X32"]}],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/run/a.sock", "listenerMetadata": "m",
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}],
         "includes": {"arches": ["amd64"], "caps": ["CAP_SYS_ADMIN"], "minKernel": "4.8"},
         "excludes": {"arches": ["s390x"], "caps": ["CAP_BPF"], "minKernel": "99.0"}},
        {"name": "mount", "action": "SCMP_ACT_NOTIFY"}],
}


def paths(value, prefix=()):
    """Every place in a JSON value (key and index paths)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


def json_path(path) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def replaced(doc, path, value):
    return with_(path, value, doc)


def only_source_errors(load):
    try:
        return load()
    except SysgateError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


# --- the Python API: many cases --------------------------------------------------------------------------
VALID_PATHS = [p for p in paths(VALID) if p]
WRONG = [None, True, 3, -1, 1.5, "x", [], ["x"], [1], {}, {"x": 1}, 2 ** 64]


@pytest.mark.parametrize("path", VALID_PATHS, ids=map(json_path, VALID_PATHS))
def test_wrong_types_in_every_field(path):
    """Every field of a valid template set to values of every other JSON type: refused with a
    message naming that field, or (null, or a value of the right type) loaded."""
    import_oci(VALID, "x86_64")
    for value in WRONG:
        try:
            import_oci(replaced(VALID, path, value), "x86_64")
        except SourceError as exc:
            where = json_path(path)
            # an error inside the field, or about the object holding it (e.g. 'name' and 'names' both set)
            assert where in str(exc) or json_path(path[:-1]) in str(exc), (where, value, str(exc))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json_values(data):
    only_source_errors(lambda: import_oci(data, "x86_64"))
    if isinstance(data, dict):
        only_source_errors(lambda: import_oci({**VALID, **data}, "x86_64"))
        only_source_errors(lambda: import_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [data]}, "x86_64"))
        only_source_errors(lambda: import_oci({"apiVersion": "security-profiles-operator.x-k8s.io/v1",
                                               "kind": "SeccompProfile", "spec": data}, "x86_64"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_PATHS), JSON)
def test_random_values_in_a_valid_profile(path, value):
    policy = only_source_errors(lambda: import_oci(replaced(VALID, path, value), "x86_64"))
    if policy is not None:           # what loads also prints and parses back, and exports
        parse_policy(format_policy(policy))
        only_source_errors(lambda: export_oci(policy))


NASTY_JSON = st.sampled_from([
    "[" * 100_000, "{" * 50_000, '{"a":' * 70 + "1" + "}" * 70, '{"defaultAction": ' + "[" * 65 + "]" * 65 + "}",
    '{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": ' + "9" * 5000 + "}", '{"defaultAction": NaN}',
    '{"defaultAction": Infinity}', '{"defaultAction": "\\ud800"}', '{"a": 1, "a": 2}', "{", '{"x": "\\q"}',
    '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [' + '{"names": ["read"], "action": "SCMP_ACT_ALLOW"},' * 50
    + "]}", "{" + '"' * 3 + "}", '{"defaultAction": 1e400}'])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(NASTY_JSON, st.builds(lambda a, b: a + b, NASTY_JSON, st.text(max_size=20)),
                 JSON.map(lambda v: json.dumps(v) if not isinstance(v, str) else "{" + v)))
def test_adversarial_json_text(text):
    only_source_errors(lambda: load_text(text if text.lstrip().startswith("{") else "{" + text, "f.json"))


TEXT_FRAGMENTS = ["read", "write", "fd", "arg0", "u32", "(", ")", "{", "}", "==", "!", "&&", "||", "->", "in", "-",
                  "~", "|", "&", ":", ",", "\n", "allow", "errno", "notify", "listener_path", "listener_metadata",
                  '"a\\"b"', '"\\u00e9"', '"\\q"', '"\\ud800"', "include", '"/nonexistent"', '"\\u0000"',
                  "99999999999999999999999999", "0x" + "f" * 40, "1" * 5000, "default", "arch", "flags", "#"]
DEEP = st.sampled_from(["read: " + "(" * 500 + "fd == 1" + ")" * 500, "read: " + "!" * 500 + "fd == 1",
                        "read: fd == " + "-" * 500 + "1", "read: fd == " + "~(" * 300 + "1" + ")" * 300,
                        "read: " + " || ".join(["fd == 1"] * 3000)])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(st.sampled_from(TEXT_FRAGMENTS), max_size=40).map(" ".join), DEEP,
                 st.text(max_size=80)))
def test_adversarial_policy_text(text):
    policy = only_source_errors(lambda: parse_policy(text, "fuzz.policy", base_dir="/nonexistent"))
    if policy is not None:
        assert parse_policy(format_policy(policy)).rules is not None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_in_files(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("bytes") / "p"
    for body in (data, b"{" + data, b"read: allow\n" + data, b'{"defaultAction": "SCMP_ACT_ALLOW\xff' + data):
        f.write_bytes(body)
        only_source_errors(lambda: load_policy(str(f)))


# --- through the CLI: a few cases ----------------------------------------------------------------------------
CLI_CASES = st.one_of(
    NASTY_JSON.map(str.encode),
    DEEP.map(str.encode),
    st.binary(max_size=60),
    st.builds(lambda v: json.dumps(v).encode(), JSON),
    st.builds(lambda p, v: json.dumps(replaced(VALID, p, v)).encode(), st.sampled_from(VALID_PATHS), JSON),
    st.sampled_from([b'{"defaultAction": "SCMP_ACT_ALLOW\xff"}', b"read: allow\n\xc3\x28",
                     b'listener_path: "\\ud800"\n', b"include \"\\u0000\"\n"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(CLI_CASES)
def test_policy_check_cli(tmp_path, data):
    f = tmp_path / "input"
    f.write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "sysgate", "policy", "check", str(f)], capture_output=True,
                         timeout=120)
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode in (0, 1, 2) and "Traceback" not in err, err
    if out.returncode == 2:
        assert err.startswith("sysgate: error: ") and err.count("\n") == 1, err
