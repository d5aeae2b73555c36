"""Security Profiles Operator ``SeccompProfile`` resources in YAML: reading (strict, bounded),
writing (``policy convert --to spo``, ``learn --format spo``) and hostile YAML."""
import copy
import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgate.errors import SourceError, SysgateError
from sysgate.policy_loader import detect_format, load_text
from sysgate.policy.oci import export_oci, import_oci
from sysgate.policy.parser import parse_policy
from sysgate.policy.spo import MAX_NODES, decode, decode_documents, export_spo, listener_problem
from support.cli import sysgate

SPEC = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/var/run/security-profiles-operator/sysgate.sock",
        "listenerMetadata": "handlers=mkdir-deny",
        "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
                     {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 201,
                      "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1000}]},
                     {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0xff, "valueTwo": 2}]}]}


def resource(spec=SPEC, **top):
    return {"apiVersion": "security-profiles-operator.x-k8s.io/v1beta1", "kind": "SeccompProfile",
            "metadata": {"name": "demo", "namespace": "default"}, "spec": spec, **top}


def as_yaml(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def unplaced(message: str) -> str:
    """``message`` without the line and column the YAML reader adds (the JSON one has none)."""
    return re.sub(r"^(p\.yaml):\d+:\d+: ", r"\1: ", message)


def error_of(load) -> str:
    with pytest.raises(SysgateError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- detection ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, fmt", [
    ("apiVersion: v1\n", "yaml"),
    ("kind: SeccompProfile\n", "yaml"),
    ("---\nkind: x\n", "yaml"),
    ("--- # first\n", "yaml"),
    ("%YAML 1.1\n---\n", "yaml"),
    ("\ufeff# a comment\n\n   # another\napiVersion: x\n", "yaml"),
    ("# apiVersion: in a comment only\ndefault: allow\n", "text"),
    ("default: allow\nread: allow\n", "text"),
    ("read: allow\n", "text"),
    ("  apiVersion: x\n", "text"),                   # indented: not a top-level key
    ("kinder: x\n", "text"),
    ("-- comment\n", "text"),
    ('{"defaultAction": "SCMP_ACT_ALLOW"}', "oci"),
    ("", "text"),
])
def test_detect_format(text, fmt):
    assert detect_format(text) == fmt


# --- reading -----------------------------------------------------------------------------------------------
def test_yaml_reads_like_json():
    """The YAML resource and the same object as JSON give the same policy."""
    from_yaml = load_text(as_yaml(resource()), "p.yaml", arch="x86_64")
    from_json = import_oci(json.dumps(resource()), "x86_64", filename="p.yaml")
    assert from_yaml.rules == from_json.rules and from_yaml.default == from_json.default
    assert (from_yaml.arches, from_yaml.flags, from_yaml.listener_path, from_yaml.listener_metadata) == \
           (from_json.arches, from_json.flags, from_json.listener_path, from_json.listener_metadata)
    assert from_yaml.decide("dup3", (1000, 0, 0, 0, 0, 0))[0].data == 201


def test_block_style_with_comments_and_anchors():
    text = """\
# SPO profile, hand-written
apiVersion: security-profiles-operator.x-k8s.io/v1
kind: SeccompProfile
metadata: {name: demo}
spec:
  defaultAction: SCMP_ACT_ERRNO
  listenerMetadata: 2001-12-14          # stays a string, as in JSON
  syscalls:
  - names: &io [read, write]
    action: SCMP_ACT_ALLOW
  - names: *io
    action: SCMP_ACT_LOG
  - names: [dup3]
    action: SCMP_ACT_ERRNO
    errnoRet: 0x10
"""
    p = load_text(text, "p.yaml", arch="x86_64")
    assert p.listener_metadata == "2001-12-14"
    assert p.decide("read")[0].kind == "allow" and p.decide("dup3")[0].data == 16


SAME_ERRORS = [
    (["spec", "baseProfileName"], "runc-v1.0.0"),
    (["spec", "syscall"], []),
    (["spec", "defaultAction"], "SCMP_ACT_FROB"),
    (["spec", "syscalls", 2, "args", 0, "index"], 9),
    (["spec", "syscalls", 2, "args", 0, "value"], 2 ** 64),
    (["spec", "syscalls", 0, "names", 1], 3),
    (["spec", "flags"], "SECCOMP_FILTER_FLAG_LOG"),
    (["apiVersion"], "security-profiles-operator.x-k8s.io/v2"),
    (["kind"], "Pod"),
]


@pytest.mark.parametrize("path, value", SAME_ERRORS, ids=[".".join(map(str, p)) for p, _ in SAME_ERRORS])
def test_errors_carry_the_json_paths(path, value):
    doc = copy.deepcopy(resource())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    from_yaml = error_of(lambda: load_text(as_yaml(doc), "p.yaml"))
    from_json = error_of(lambda: load_text(json.dumps(doc), "p.yaml"))
    assert unplaced(from_yaml) == from_json and "$." in from_yaml
    assert re.match(r"p\.yaml:\d+:\d+: \$", from_yaml), from_yaml


def test_base_profile_is_an_error():
    message = error_of(lambda: load_text(as_yaml(resource({**SPEC, "baseProfileName": "runc-v1.1.0"})), "p.yaml"))
    assert message.startswith('p.yaml:41:20: $.spec.baseProfileName: "runc-v1.1.0" is a base profile in the cluster')


def test_validation_errors_point_at_the_yaml():
    text = """\
apiVersion: security-profiles-operator.x-k8s.io/v1
kind: SeccompProfile
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls:
  - names: [read]
    action: SCMP_ACT_ALLOW
  - names: [dup3]
    action: SCMP_ACT_ERRNO
    args:
    - {index: 0, op: SCMP_CMP_EQ, value: 1}
    - {index: 7, op: SCMP_CMP_EQ, value: 1}
  "x y": 1
"""
    assert error_of(lambda: load_text(text, "p.yaml")).startswith('p.yaml:13:10: $.spec["x y"]: unknown field')
    fixed = text.replace('  "x y": 1\n', "")
    assert error_of(lambda: load_text(fixed, "p.yaml")) == \
        "p.yaml:12:15: $.spec.syscalls[1].args[1].index: must be 0..5, not 7"
    other = yaml.safe_dump_all([{"kind": "Namespace"}, {**resource(), "spec": {"defaultAction": 3}}])
    assert error_of(lambda: load_text(other, "p.yaml")).startswith("p.yaml:9:18: $.spec.defaultAction: must be")


def test_multi_document_streams():
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    both = yaml.safe_dump_all([ns, resource()])
    assert load_text(both, "p.yaml", arch="x86_64").listener_path == SPEC["listenerPath"]
    assert load_text("---\n---\n" + as_yaml(resource()) + "...\n", "p.yaml").default.kind == "errno"
    two = yaml.safe_dump_all([resource(), resource()])
    assert error_of(lambda: load_text(two, "p.yaml")) == \
        "p.yaml: 2 YAML documents with 2 SeccompProfile(s): sysgate reads exactly one"
    none = yaml.safe_dump_all([ns, ns])
    assert "with 0 SeccompProfile(s)" in error_of(lambda: load_text(none, "p.yaml"))
    assert error_of(lambda: load_text("---\n", "p.yaml")) == "p.yaml: the YAML file holds no document"
    assert "must be a Kubernetes SeccompProfile" in error_of(lambda: load_text("---\n- a\n", "p.yaml"))
    assert "must be a Kubernetes SeccompProfile" in error_of(
        lambda: load_text("---\ndefaultAction: SCMP_ACT_ALLOW\n", "p.yaml"))


# --- hostile YAML: one clean line, bounded time ----------------------------------------------------------------
def laughs(levels: int, width: int = 9) -> str:
    lines = ['apiVersion: security-profiles-operator.x-k8s.io/v1', "kind: SeccompProfile",
             "spec:", "  defaultAction: SCMP_ACT_ALLOW", "  listenerMetadata: x", '  l0: &l0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_before_it_is_walked():
    message = error_of(lambda: load_text(laughs(9), "p.yaml"))   # 9^9 = 387 million strings
    assert f"aliases expand to more than {MAX_NODES} nodes" in message and message.startswith("p.yaml:")
    # fewer aliases than the limit: the usual validation (unknown field l0) applies
    assert "$.spec.l0: unknown field" in error_of(lambda: load_text(laughs(3), "p.yaml"))


def test_aliases_in_validated_fields_are_refused_not_walked(tmp_path):
    """Where the validator walks (every rule, every name), aliases multiply its work: 20000
    aliases of a rule of 20000 names are 4e8 names from 250 kB. Refused at once; without the
    expansion check ``policy check`` would still be walking them when the timeout ends the test."""
    names = ", ".join(["read"] * 20000)
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: security-profiles-operator.x-k8s.io/v1\nkind: SeccompProfile\nspec:\n"
                 "  defaultAction: SCMP_ACT_ERRNO\n"
                 f"  syscalls: [&rule {{names: [{names}], action: SCMP_ACT_ALLOW}}, {', '.join(['*rule'] * 20000)}]\n")
    r = sysgate("policy", "check", str(f), timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith(f"sysgate: error: {f}:5:") and f"expand to more than {MAX_NODES} nodes" in r.stderr


def test_the_alias_guard_is_what_stops_it(monkeypatch):
    """Without the expansion check the document decodes into a structure that stands for 9^9
    nodes (shared), which is what a JSON walk (json.dumps) would have to expand."""
    from sysgate.policy import spo

    monkeypatch.setattr(spo, "_check_expansion", lambda node, filename: None)
    doc = decode(laughs(5), "p.yaml")                      # 9^5: small enough to count here
    assert len(json.dumps(doc)) > 9 ** 5 * 5


@pytest.mark.parametrize("text, expected", [
    ("a: &a [*a]\n", "nested deeper than 64 levels once its aliases are expanded"),
    ("a: &a {b: *a}\n", "nested deeper than 64 levels once its aliases are expanded"),
    ("a: " + "[" * 100000 + "]" * 100000 + "\n", "nested deeper than 64 levels"),
    ("a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", "nested deeper than 64 levels"),
    ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 300)), "nested deeper than 64 levels"),
    ("a: &x " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*x" + "]" * 30 + "\n",
     "nested deeper than 64 levels once its aliases are expanded"),
    ("a: 1\na: 2\n", "the key \"a\" appears twice in one mapping"),
    ("a: 1\n? a\n: 2\n", "appears twice"),
    ("a: {0x1: x, 1: y}\n", "the key 1 appears twice"),
    ("a: &b {x: 1}\nc:\n  <<: *b\n", "merge keys (<<) are not supported"),
    ("? [a, b]\n: c\n", "a mapping key must be a scalar"),
    ("a: " + "9" * 5000 + "\n", "integer of more than 1024 bits"),
    ("a: 0x" + "f" * 300 + "\n", "integer of more than 1024 bits"),
    ("a: 0b" + "1" * 1025 + "\n", "integer of more than 1024 bits"),
    ("a: .nan\n", ".nan is not a finite number"),
    ("a: -.inf\n", "is not a finite number"),
    ("a: !!binary aGVsbG8=\n", "could not determine a constructor for the tag 'tag:yaml.org,2002:binary'"),
    ("a: !!set {x, y}\n", "tag:yaml.org,2002:set"),
    ("a: !!timestamp 2001-12-14\n", "tag:yaml.org,2002:timestamp"),
    ("a: !!python/object:os.system {}\n", "python/object"),
    ("a: !!python/name:os.system ''\n", "python/name"),
    ("a: *nothing\n", "found undefined alias"),
    ("a: b: c\n", "mapping values are not allowed here"),
    ("a: \x07\n", "p.yaml:2:4: invalid YAML: character U+0007 is not allowed (special characters are not allowed)"),
    ("a: [1, 2\n", "invalid YAML"),
    ("a:\n\t- b\n", "invalid YAML"),
])
def test_hostile_yaml(text, expected):
    message = error_of(lambda: load_text("apiVersion: x\n" + text, "p.yaml"))
    assert message.startswith("p.yaml") and expected in message, message


def test_positions_are_reported():
    message = error_of(lambda: load_text("apiVersion: x\nkind: y\nkind: z\n", "p.yaml"))
    assert message == 'p.yaml:3:1: invalid YAML: the key "kind" appears twice in one mapping'


def test_invalid_utf8_file_is_one_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(b"apiVersion: security-profiles-operator.x-k8s.io/v1\nkind: SeccompProfile\nspec: \xff\xfe\n")
    r = sysgate("policy", "check", str(f))
    assert r.returncode == 2 and r.stderr == f"sysgate: error: {f}: not a policy (not UTF-8 text, byte 78)\n"


def test_stdin_yaml_with_lone_surrogate_is_one_line():
    r = sysgate("policy", "check", "-", input="apiVersion: x\nkind: \udcff\n".encode("utf-8", "surrogateescape")
                .decode("latin-1"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


NASTY = ["&a", "*a", "[", "]", "{", "}", ": ", "- ", "? ", "<<: ", "!!binary ", "!!python/object ", "0x" + "f" * 400,
         "9" * 5000, ".nan", "\t", "\n", "\n  ", "'", '"', "#", "---\n", "...\n", "%YAML 1.1\n", "\x00", "\ud800",
         "é", "SCMP_ACT_ALLOW", "names", "spec", "syscalls"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_profiles_fail_cleanly(data):
    """A valid resource with random splices of YAML syntax: a policy or one SysgateError line."""
    text = as_yaml(resource())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 5))
        piece = data.draw(st.sampled_from(NASTY) | st.text(max_size=6))
        text = text[:at] + piece + text[at + cut:]
    try:
        load_text(text, "p.yaml")
    except SysgateError as exc:
        assert "\n" not in str(exc), str(exc)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 200), 2 ** 200) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_json_values_survive_yaml(value):
    """Any JSON value written as YAML decodes to itself: the reader is JSON's data model."""
    try:
        text = yaml.safe_dump(value)     # non-ASCII escaped: the dumper mangles U+0085 otherwise
    except yaml.YAMLError:
        return
    try:
        decoded = decode_documents(text, "v.yaml")
    except SourceError as exc:
        assert "special characters are not allowed" in str(exc) or "nested deeper" in str(exc), str(exc)
        return
    assert decoded == ([] if value is None else [value])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["syscalls", "names", "args", "action", "errnoRet", "index", "value", "op", "spec",
                        "listenerPath", "flags", "architectures"]),
       st.none() | st.booleans() | st.integers(-(2 ** 1000), 2 ** 1000)
       | st.floats(allow_nan=False, allow_infinity=False)
       | st.text(max_size=5)
       | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
def test_wrong_types_say_the_same_as_json(field, value):
    doc = copy.deepcopy(resource())
    targets = [doc, doc["spec"], doc["spec"]["syscalls"][2], doc["spec"]["syscalls"][2]["args"][0]]
    for t in targets:
        if field in t:
            t[field] = value
    results = []
    for text in (as_yaml(doc), json.dumps(doc)):
        try:
            policy = load_text(text, "p.yaml", arch="x86_64")
            results.append(("ok", policy.rules))
        except SysgateError as exc:
            results.append(("error", unplaced(str(exc))))
    assert results[0] == results[1]


# --- writing -----------------------------------------------------------------------------------------------
def test_export_reads_back_to_the_same_rules():
    policy = load_text(as_yaml(resource()), "p.yaml", arch="x86_64")
    text = export_spo(policy, name="demo", namespace="default", header="made by a test")
    assert text.startswith("# made by a test\napiVersion: security-profiles-operator.x-k8s.io/v1beta1\n")
    doc = yaml.safe_load(text)
    assert doc["metadata"] == {"name": "demo", "namespace": "default"}
    oci = export_oci(policy)
    assert oci.pop("defaultErrnoRet") == 1 and doc["spec"] == oci   # no such field in SPO; EPERM is runc's default
    back = load_text(text, "q.yaml", arch="x86_64")
    assert export_oci(back) == export_oci(policy)


def test_export_warnings_and_names():
    policy = parse_policy('default: errno(ENOSYS)\nlistener_path: "/run/sysgate.sock"\nmkdir: notify\n'
                          'lseek: arg1 == 0xffffffffffffffff\n', "p.policy")
    warnings = []
    doc = yaml.safe_load(export_spo(policy, warn=warnings.append))
    assert doc["metadata"] == {"name": "p"} and "defaultErrnoRet" not in doc["spec"]
    assert any("errno 38 has no SeccompProfile field" in w for w in warnings)
    assert any("is not a file name directly in /var/run/security-profiles-operator/" in w for w in warnings)
    assert any("lseek: argument values above 2^63-1" in w for w in warnings)
    for name in ("Demo", "a_b", "-a", "a" * 254, ""):
        with pytest.raises(SysgateError, match="--name"):
            export_spo(policy, name=name)
    with pytest.raises(SysgateError, match="--namespace"):
        export_spo(policy, namespace="a.b")


@pytest.mark.parametrize("path, ok", [
    ("/var/run/security-profiles-operator/sysgate.sock", True),
    ("/var/run/security-profiles-operator/a/b.sock", False),
    ("/var/run/security-profiles-operator/", False),
    ("/var/run/security-profiles-operator/../x.sock", False),
    ("/run/security-profiles-operator/x.sock", False),
    (None, True),
])
def test_listener_problem(path, ok):
    policy = parse_policy("read: allow\n", "p.policy")
    policy.listener_path = path
    assert (listener_problem(policy) is None) == ok


def test_convert_cli(tmp_path):
    src = tmp_path / "web-app.policy"
    src.write_text('default: errno(EPERM)\nlistener_path: "/var/run/security-profiles-operator/s.sock"\n'
                   "read, write: allow\nmkdir: notify\n")
    out = tmp_path / "web.yaml"
    r = sysgate("policy", "convert", str(src), "--to", "spo", "--namespace", "prod", "-o", str(out))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["metadata"] == {"name": "web-app", "namespace": "prod"}
    assert sysgate("policy", "check", str(out)).stdout.startswith(f"{out}: ok: 3 rules")
    named = sysgate("policy", "convert", str(out), "--to", "spo", "--name", "other")
    assert yaml.safe_load(named.stdout)["metadata"] == {"name": "other"}
    again = json.loads(sysgate("policy", "convert", str(out), "--to", "oci").stdout)
    assert again.pop("defaultErrnoRet") == 1 and again == doc["spec"]


def test_convert_strict_refuses_an_operator_rejected_listener(tmp_path):
    src = tmp_path / "p.policy"
    src.write_text('listener_path: "/run/sysgate.sock"\nmkdir: notify\n')
    loose = sysgate("policy", "convert", str(src), "--to", "spo")
    assert loose.returncode == 0 and "warning: listenerPath '/run/sysgate.sock' is not a file name" in loose.stderr
    strict = sysgate("policy", "convert", str(src), "--to", "spo", "--strict")
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.startswith(f"sysgate: error: {src}: listenerPath '/run/sysgate.sock'")
    bad = sysgate("policy", "convert", str(src), "--to", "spo", "--name", "Bad_Name")
    assert bad.returncode == 2 and bad.stderr.startswith("sysgate: error: --name:")


def test_learn_writes_a_profile_that_runs_the_command(tmp_path):
    """learn -o X.yaml writes a SeccompProfile; run --policy X.yaml enforces it on the same
    command (a real filter), and a command needing more is refused by it."""
    out = tmp_path / "true-profile.yaml"
    r = sysgate("learn", "-o", str(out), "--no-progress", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} (spo)" in r.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "SeccompProfile" and doc["metadata"] == {"name": "true-profile"}
    assert doc["spec"]["defaultAction"] == "SCMP_ACT_ERRNO"
    ok = sysgate("run", "--policy", str(out), "--", "/bin/true")
    assert ok.returncode == 0, ok.stderr
    denied = sysgate("run", "--policy", str(out), "--", "/bin/sh", "-c", "mkdir " + str(tmp_path / "d"))
    assert denied.returncode != 0 and not (tmp_path / "d").exists()
    stdout = sysgate("learn", "-o", "-", "--format", "spo", "--no-progress", "--", "/bin/true")
    assert yaml.safe_load(stdout.stdout)["metadata"] == {"name": "sysgate-learned"}
