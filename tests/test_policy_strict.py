"""Every input checked, nothing dropped silently: JSON profiles (OCI, Docker/podman,
Kubernetes SeccompProfile), the --caps/--kernel selection, nesting limits, and what
`policy convert` carries (issue 12)."""
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from sysgate.errors import SourceError, SysgateError
from sysgate.policy.jsondoc import MAX_DEPTH
from sysgate.policy_loader import load_policy
from sysgate.policy.model import Action
from sysgate.policy.oci import import_oci, parse_caps, parse_kernel
from sysgate.policy.parser import MAX_NESTING, parse_policy
from support.profiles import BASE, RULE, with_
from support.cli import sysgate

DATA = Path(__file__).parent / "data"
PODMAN = "/usr/share/containers/seccomp.json"
ORACLE = Path(__file__).parent / "support" / "libseccomp_oracle.py"
needs_podman = pytest.mark.skipif(not os.path.exists(PODMAN), reason="podman's seccomp.json not installed")


def one_error_line(out, code=2):
    """The CLI refused with exactly one `sysgate: error:` line on stderr and no traceback."""
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("sysgate: error: "), out.stderr
    return out.stderr.strip()


def error_of(profile, **options) -> str:
    with pytest.raises(SourceError) as e:
        import_oci(profile, filename="p.json", **options)
    return str(e.value)


# --- unknown fields, shapes, required fields ---------------------------------------------------
@pytest.mark.parametrize("profile, message", [
    # the typo that used to mean "no rules" (allow everything)
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscall": [RULE]}, "$.syscall: unknown field; did you mean 'syscalls'?"),
    (with_(["syscalls", 0, "nmaes"], ["write"]), "$.syscalls[0].nmaes: unknown field; did you mean 'names'?"),
    (with_(["syscalls", 0, "args"], [{"index": 0, "vaule": 1, "op": "SCMP_CMP_EQ"}]),
     "$.syscalls[0].args[0].vaule: unknown field; did you mean 'value'?"),
    (with_(["syscalls", 0, "includes"], {"cap": ["CAP_SYS_ADMIN"]}),
     "$.syscalls[0].includes.cap: unknown field; did you mean 'caps'?"),
    (with_(["archMap"], [{"architecture": "SCMP_ARCH_X86_64", "subArchitecture": []}]),
     "$.archMap[0].subArchitecture: unknown field; did you mean 'subArchitectures'?"),
    ({"syscalls": [RULE]}, "$.defaultAction: missing (a required field)"),
    ({"defaultAction": None}, "$.defaultAction: missing (a required field)"),
    (with_(["syscalls", 0], {"names": ["read"]}), "$.syscalls[0].action: missing (a required field)"),
    (with_(["syscalls", 0], {"action": "SCMP_ACT_ERRNO"}), "$.syscalls[0].names: missing or empty"),
    (with_(["syscalls", 0, "names"], []), "$.syscalls[0].names: missing or empty"),
    (with_(["syscalls", 0, "args"], [{"index": 0, "value": 1}]), "$.syscalls[0].args[0].op: missing"),
    (with_(["syscalls", 0, "args"], [{"op": "SCMP_CMP_EQ", "value": 1}]), "$.syscalls[0].args[0].index: missing"),
    (with_(["syscalls"], RULE), "$.syscalls: must be a list, not an object"),
    (with_(["syscalls"], [["read"]]), "$.syscalls[0]: must be an object, not a list"),
    (with_(["syscalls", 0, "names"], "read"), "$.syscalls[0].names: must be a list, not a string"),
    (with_(["syscalls", 0, "names"], ["read", 7]), "$.syscalls[0].names[1]: must be a string, not a number"),
    (with_(["syscalls", 0, "action"], ["SCMP_ACT_ERRNO"]), "$.syscalls[0].action: must be a string, not a list"),
    (with_(["syscalls", 0, "errnoRet"], "1"), "$.syscalls[0].errnoRet: must be an integer, not a string"),
    (with_(["syscalls", 0, "errnoRet"], 1.0), "$.syscalls[0].errnoRet: must be an integer, not a non-integer"),
    (with_(["syscalls", 0, "errnoRet"], True), "$.syscalls[0].errnoRet: must be an integer, not a boolean"),
    (with_(["syscalls", 0, "args"], [{"index": "0", "value": 1, "op": "SCMP_CMP_EQ"}]),
     "$.syscalls[0].args[0].index: must be an integer, not a string"),
    (with_(["listenerPath"], 3), "$.listenerPath: must be a string, not a number"),
    (with_(["flags"], "SECCOMP_FILTER_FLAG_LOG"), "$.flags: must be a list, not a string"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "weird key!": 1}, '$["weird key!"]: unknown field'),
])
def test_shape_errors_name_the_json_path(profile, message):
    assert message in error_of(profile)


# --- values --------------------------------------------------------------------------------------
U64 = 2 ** 64 - 1


@pytest.mark.parametrize("path, value, message", [
    (["defaultAction"], "SCMP_ACT_ALOW", "$.defaultAction: unknown action \"SCMP_ACT_ALOW\"; did you mean "
                                         "'SCMP_ACT_ALLOW'?"),
    (["syscalls", 0, "errnoRet"], 4096, "$.syscalls[0].errnoRet: must be 0..4095 for SCMP_ACT_ERRNO, not 4096"),
    (["syscalls", 0, "errnoRet"], -1, "$.syscalls[0].errnoRet: must be 0..4095"),
    (["syscalls", 0, "args"], [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
     "$.syscalls[0].args[0].index: must be 0..5, not 6"),
    (["syscalls", 0, "args"], [{"index": -1, "value": 1, "op": "SCMP_CMP_EQ"}], "index: must be 0..5, not -1"),
    (["syscalls", 0, "args"], [{"index": 0, "value": U64 + 1, "op": "SCMP_CMP_EQ"}],
     "$.syscalls[0].args[0].value: must be an unsigned 64-bit number"),
    (["syscalls", 0, "args"], [{"index": 0, "value": 1, "valueTwo": -5, "op": "SCMP_CMP_MASKED_EQ"}],
     "$.syscalls[0].args[0].valueTwo: must be an unsigned 64-bit number, not -5"),
    (["syscalls", 0, "args"], [{"index": 0, "value": 1, "op": "SCMP_CMP_EQQ"}],
     "$.syscalls[0].args[0].op: unknown op \"SCMP_CMP_EQQ\"; did you mean 'SCMP_CMP_EQ'?"),
    (["architectures"], ["SCMP_ARCH_X86_46"], "$.architectures[0]: unknown architecture \"SCMP_ARCH_X86_46\"; "
                                              "did you mean 'SCMP_ARCH_X86_64'?"),
    (["archMap"], [{"architecture": "SCMP_ARCH_AARCH46", "subArchitectures": []}],
     "$.archMap[0].architecture: unknown architecture"),
    (["flags"], ["SECCOMP_FILTER_FLAG_LGO"], "$.flags[0]: unknown filter flag \"SECCOMP_FILTER_FLAG_LGO\"; "
                                             "did you mean 'SECCOMP_FILTER_FLAG_LOG'?"),
    (["syscalls", 0, "excludes"], {"caps": ["CAP_SYS_ADMN"]},
     "$.syscalls[0].excludes.caps[0]: unknown capability \"CAP_SYS_ADMN\"; did you mean 'CAP_SYS_ADMIN'?"),
    (["syscalls", 0, "includes"], {"caps": ["SYS_ADMIN"]},       # Docker compares profile caps literally
     "unknown capability \"SYS_ADMIN\"; did you mean 'CAP_SYS_ADMIN'?"),
    (["syscalls", 0, "includes"], {"minKernel": "banana"}, "$.syscalls[0].includes.minKernel: \"banana\" is not a "
                                                           "kernel version"),
    (["syscalls", 0, "action"], "SCMP_ACT_KILL", None),            # (valid: checks the next case's base)
])
def test_value_errors(path, value, message):
    profile = with_(path, value)
    if message is None:
        import_oci(profile)
        return
    assert message in error_of(profile)


def test_errno_names_of_containers_common():
    """podman's profile spells errnos by name (defaultErrno, errno) next to the numbers."""
    p = import_oci({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "ENOSYS",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EACCES"},
                                 {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "errnoRet": 1}]})
    assert p.default == Action("errno", errno.ENOSYS)
    assert p.decide("read")[0] == Action("errno", errno.EACCES) and p.decide("write")[0] == Action("errno", 1)
    assert "errnoRet 2 and errno EPERM (1) disagree" in error_of(
        with_(["syscalls", 0], {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "errnoRet": 2}))
    assert "$.syscalls[0].errno: unknown errno name \"EPREM\"; did you mean 'EPERM'?" in error_of(
        with_(["syscalls", 0], {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EPREM"}))


def test_duplicate_keys_and_non_numbers_are_invalid_json():
    assert "the key \"action\" appears twice" in error_of(
        '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", '
        '"action": "SCMP_ACT_ALLOW"}]}')
    assert "NaN is not a JSON number" in error_of('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": NaN}')
    assert "invalid JSON" in error_of('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1' + "0" * 5000 + "}")


def test_config_json_without_seccomp_is_an_error():
    assert "$.linux.seccomp: missing: this config.json has no seccomp profile" in error_of(
        {"ociVersion": "1.0.2", "linux": {"namespaces": []}})
    assert "$.linux: missing" in error_of({"ociVersion": "1.0.2", "process": {}})
    assert "$.linux.seccomp.syscall: unknown field" in error_of(
        {"ociVersion": "1.0.2", "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscall": []}}})


def test_real_profiles_load_without_errors():
    seen = []
    load_policy(str(DATA / "docker-default.json"), arch="x86_64", warn=seen.append)
    assert all("unknown syscalls ignored: some_future_syscall" in w for w in seen), seen
    if os.path.exists(PODMAN):
        for arch in ("x86_64", "aarch64", "s390x", "ppc64le"):     # mips64: no syscall table, refused as a target
            load_policy(PODMAN, arch=arch, caps=["ALL"])


def test_unknown_architecture_is_an_error_and_a_foreign_one_a_warning(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps(with_(["architectures"], ["SCMP_ARCH_X86", "SCMP_ARCH_PPC"])))
    seen = []
    p = load_policy(str(f), arch="x86_64", warn=seen.append)
    assert p.arches == ["x86_64", "i386"]
    assert seen == [f"{f}: $.architectures[1]: architecture 'SCMP_ARCH_PPC' is not supported by sysgate; its "
                    f"system calls get the bad-architecture action (kill_thread)"]
    out = sysgate("policy", "check", f)
    assert out.returncode == 0 and "warning:" in out.stderr
    strict = sysgate("policy", "check", "--strict", f)
    assert strict.returncode == 1 and "SCMP_ARCH_PPC" in strict.stderr


# --- the Kubernetes Security Profiles Operator's SeccompProfile ------------------------------------------
SPEC = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/var/run/security-profiles-operator/a.sock",
        "listenerMetadata": "m",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                     {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 201,
                      "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1000}]},
                     {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 202,
                      "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1001},
                               {"index": 1, "op": "SCMP_CMP_EQ", "value": 2001}]}]}


def spo(spec=SPEC, version="security-profiles-operator.x-k8s.io/v1beta1", **top):
    return {"apiVersion": version, "kind": "SeccompProfile",
            "metadata": {"name": "demo", "namespace": "default", "labels": {"a": "b"}}, "spec": spec, **top}


@pytest.mark.parametrize("version", ["v1beta1", "v1", "v1alpha1"])
def test_seccomp_profile_reads_the_spec(version):
    p = import_oci(spo(version=f"security-profiles-operator.x-k8s.io/{version}", status={"status": "Installed"}),
                   arch="x86_64")
    assert p.default == Action("allow") and p.arches == ["x86_64", "i386"] and p.flags == ["LOG"]
    assert (p.listener_path, p.listener_metadata) == (SPEC["listenerPath"], "m")
    assert p.decide("mkdir")[0] == Action("errno", 13)
    assert p.decide("dup3", (1000, 0, 0, 0, 0, 0))[0] == Action("errno", 201)


def test_seccomp_profile_means_what_its_spec_means_to_libseccomp():
    """The spec, loaded by libseccomp the way runc does, decides the probes as sysgate's import of
    the whole SeccompProfile object does."""
    probes = [["dup3", [a, b, 0]] for a in (1000, 1001) for b in (2000, 2001)]
    spec = {k: v for k, v in SPEC.items() if not k.startswith("listener") and k != "flags"}
    policy = import_oci(spo(spec))
    run = lambda profile: json.loads(subprocess.run(  # noqa: E731
        ["/usr/bin/python3", str(ORACLE)], input=json.dumps({"profile": profile, "probes": probes}),
        capture_output=True, text=True, timeout=60, check=True).stdout)["results"]
    baseline, got = run(None), run(spec)
    want = [base if (a := policy.decide(n, tuple(args) + (0,) * 3)[0]).kind == "allow" else a.data
            for (n, args), base in zip(probes, baseline)]
    assert got == want and 201 in got and 202 in got


@pytest.mark.parametrize("doc, message", [
    (spo(with_(["baseProfileName"], "runc-v1.0.0", SPEC)),
     "$.spec.baseProfileName: \"runc-v1.0.0\" is a base profile in the cluster, which sysgate cannot resolve"),
    (spo(version="security-profiles-operator.x-k8s.io/v2"), "$.apiVersion: unknown API version"),
    (spo(version="v1"), "$.apiVersion: unknown API version \"v1\""),
    ({**spo(), "kind": "Pod"}, "$.kind: \"Pod\" is not a seccomp profile"),
    ({**spo(), "kind": "SelinuxProfile"}, "$.kind: \"SelinuxProfile\" is not a seccomp profile"),
    ({k: v for k, v in spo().items() if k != "spec"}, "$.spec: missing"),
    (spo({k: v for k, v in SPEC.items() if k != "defaultAction"}), "$.spec.defaultAction: missing"),
    (spo(with_(["syscall"], [], SPEC)), "$.spec.syscall: unknown field; did you mean 'syscalls'?"),
    (spo(with_(["archMap"], [], SPEC)), "$.spec.archMap: unknown field"),              # not an SPO field
    (spo(with_(["syscalls", 0, "includes"], {}, SPEC)), "$.spec.syscalls[0].includes: unknown field"),
    (spo(with_(["syscalls", 2, "args", 0, "op"], "SCMP_CMP_EQUAL", SPEC)),
     "$.spec.syscalls[2].args[0].op: unknown op"),
    ({**spo(), "extra": 1}, "$.extra: unknown field"),
])
def test_seccomp_profile_errors(doc, message):
    assert message in error_of(doc)


def test_seccomp_profile_in_policy_check_is_not_an_empty_policy(tmp_path):
    f = tmp_path / "sp.json"
    f.write_text(json.dumps(spo()))
    out = sysgate("policy", "check", "--strict", f, "--arch", "x86_64")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{f}: ok: 4 rules (2 conditional) for 3 syscalls; default allow; arch x86_64, i386\n"
    f.write_text(json.dumps(spo(with_(["baseProfileName"], "runc-v1.0.0", SPEC))))
    assert "baseProfileName" in one_error_line(sysgate("policy", "check", f))
    f.write_text(json.dumps(spo(with_(["disabled"], True, SPEC))))
    assert sysgate("policy", "check", "--strict", f).returncode == 1


def test_seccomp_profile_is_enforced_by_run(tmp_path):
    """A SeccompProfile given to `sysgate run --profile` really refuses mkdir in the child."""
    f = tmp_path / "sp.json"
    spec = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}
    f.write_text(json.dumps(spo(spec)))
    target = tmp_path / "made"
    out = sysgate("run", "--profile", f, "--", "/bin/mkdir", target)
    assert out.returncode != 0 and "Permission denied" in out.stderr and not target.exists()
    plain = subprocess.run(["/bin/mkdir", str(target)], capture_output=True)
    assert plain.returncode == 0 and target.exists()


def test_typo_profile_is_refused_by_run_instead_of_allowing_everything(tmp_path):
    """`"syscall"` for `"syscalls"` used to load as a profile without rules: with defaultAction
    SCMP_ACT_ALLOW the program then ran unfiltered."""
    f = tmp_path / "typo.json"
    target = tmp_path / "made"
    f.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                             "syscall": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    out = sysgate("run", "--profile", f, "--", "/bin/mkdir", target)
    assert "did you mean 'syscalls'?" in one_error_line(out, 125)
    assert not target.exists()


# --- --caps, --kernel, --strict -------------------------------------------------------------------
def test_parse_caps_and_kernel():
    assert parse_caps(["SYS_ADMIN", "cap_net_raw", " CAP_KILL "]) == {"CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_KILL"}
    assert len(parse_caps(["ALL"])) == 41
    for bad in ("CAP_FOO", "", "SYS_ADMN"):
        with pytest.raises(SysgateError, match="unknown capability"):
            parse_caps([bad])
    assert parse_kernel("6.1") == (6, 1) and parse_kernel("5.10.0-27-amd64") == (5, 10, 0)
    for bad in ("banana", "", "6", "6.x", "1" * 5000 + ".1", None):
        with pytest.raises(SysgateError, match="is not a kernel version"):
            parse_kernel(bad)


@needs_podman
def test_caps_without_prefix_match_like_docker(tmp_path):
    """podman's profile allows bpf only with CAP_SYS_ADMIN; Docker accepts SYS_ADMIN for it."""
    with_prefix = load_policy(PODMAN, arch="x86_64", caps=["CAP_SYS_ADMIN"])
    without = load_policy(PODMAN, arch="x86_64", caps=["SYS_ADMIN"])
    assert without.decide("bpf")[0] == with_prefix.decide("bpf")[0] == Action("allow")
    assert load_policy(PODMAN, arch="x86_64", caps=[]).decide("bpf")[0] == Action("errno", errno.EPERM)
    out = sysgate("policy", "convert", PODMAN, "--to", "text", "--caps", "SYS_ADMIN")
    assert out.returncode == 0 and "\nbpf: allow\n" in out.stdout


@pytest.mark.parametrize("option, message", [
    (["--caps", "CAP_FOO"], "sysgate: error: --caps: unknown capability \"CAP_FOO\""),
    (["--caps", "CAP_SYS_ADMN"], "did you mean 'CAP_SYS_ADMIN'?"),
    (["--kernel", "banana"], "sysgate: error: --kernel: \"banana\" is not a kernel version"),
    (["--kernel", ""], "sysgate: error: --kernel: \"\" is not a kernel version"),
])
@pytest.mark.parametrize("kind", ["json", "text"])
def test_bad_selection_options_are_errors(tmp_path, option, message, kind):
    f = tmp_path / f"p.{kind}"
    f.write_text(json.dumps(BASE) if kind == "json" else "read: allow\n")
    assert message in one_error_line(sysgate("policy", "check", f, *option))


def test_selection_options_with_a_text_policy_are_a_warning(tmp_path):
    f = tmp_path / "p.policy"
    f.write_text("read: allow\n")
    out = sysgate("policy", "check", f, "--caps", "SYS_ADMIN")
    assert out.returncode == 0 and "select rules of JSON profiles only; ignored" in out.stderr
    assert sysgate("policy", "check", "--strict", f, "--caps", "SYS_ADMIN").returncode == 1


def test_kernel_selects_min_kernel_rules():
    old = load_policy(str(DATA / "docker-default.json"), arch="x86_64", kernel="4.4")
    new = load_policy(str(DATA / "docker-default.json"), arch="x86_64", kernel="4.8")
    assert old.decide("ptrace")[0] == Action("errno", 1) and new.decide("ptrace")[0] == Action("allow")


# --- nesting limits: one line instead of a RecursionError -------------------------------------------
DEEP_TEXT = {
    "parens": "default: allow\nread: " + "(" * 200 + "fd == 1" + ")" * 200 + " -> errno(1)\n",
    "nots": "default: allow\nread: " + "!" * 200 + "fd == 1 -> errno(1)\n",
    "minus": "default: allow\nread: fd == " + "-" * 200 + "1 -> errno(1)\n",
    "value parens": "default: allow\nread: fd == " + "(" * 200 + "1" + ")" * 200 + " -> errno(1)\n",
}
DEEP_JSON = {
    "lists": '{"defaultAction": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "objects": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]}",
}


def refused_by_every_command(f, run_option: str, message: str) -> None:
    """``policy check``, ``compile`` and ``run RUN_OPTION f`` each refuse ``f`` with one error line."""
    for command, code in (["policy", "check", f], 2), (["compile", f], 2), (["run", run_option, f, "--", "true"], 125):
        assert message in one_error_line(sysgate(*command), code)


@pytest.mark.parametrize("name", DEEP_TEXT)
def test_deep_policy_text_is_one_error(tmp_path, name):
    f = tmp_path / "deep.policy"
    f.write_text(DEEP_TEXT[name])
    refused_by_every_command(f, "--policy", f"expression nested deeper than {MAX_NESTING} levels")


@pytest.mark.parametrize("name", DEEP_JSON)
def test_deep_json_is_one_error(tmp_path, name):
    f = tmp_path / "deep.json"
    f.write_text(DEEP_JSON[name])
    refused_by_every_command(f, "--profile", f"JSON nested deeper than {MAX_DEPTH} levels")


def test_nesting_at_the_limit_is_accepted_and_compiles(tmp_path):
    text = ("default: allow\nread: " + "(" * (MAX_NESTING - 1) + "fd == 7" + ")" * (MAX_NESTING - 1)
            + " -> errno(1)\nwrite: " + "!" * (MAX_NESTING - 1) + "fd == 7 -> errno(2)\n")
    p = parse_policy(text)
    assert p.decide("read", (7, 0, 0, 0, 0, 0))[0] == Action("errno", 1)
    assert p.decide("write", (7, 0, 0, 0, 0, 0))[0] == Action("allow")        # 99 negations
    f = tmp_path / "limit.policy"
    f.write_text(text)
    assert sysgate("compile", f, "-o", tmp_path / "f.bpf").returncode == 0
    nested = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [RULE]}
    doc = json.dumps(nested)[:-1] + ', "listenerMetadata": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert "$.listenerMetadata: must be a string, not a list" in error_of(doc)     # decoded, then refused
    strings = '{"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "' + "[{" * 1000 + '"}'
    assert import_oci(strings).listener_metadata == "[{" * 1000                    # brackets in strings: not nesting


# --- policy convert: the listener, and what OCI cannot say ---------------------------------------------
def test_listener_round_trips_text_oci_text(tmp_path):
    f = tmp_path / "l.policy"
    f.write_text('default: allow\nlistener_path: "/run/agent \\"1\\".sock"\nlistener_metadata: "k=v\\n\\u00e9"\n'
                 "mount: notify\n")
    oci = sysgate("policy", "convert", f, "--to", "oci")
    assert oci.returncode == 0, oci.stderr
    data = json.loads(oci.stdout)
    assert (data["listenerPath"], data["listenerMetadata"]) == ('/run/agent "1".sock', "k=v\n\u00e9")
    j = tmp_path / "l.json"
    j.write_text(oci.stdout)
    text = sysgate("policy", "convert", j, "--to", "text")
    assert text.returncode == 0 and 'listener_path: "/run/agent \\"1\\".sock"\n' in text.stdout
    back = tmp_path / "back.policy"
    back.write_text(text.stdout)
    again = sysgate("policy", "convert", back, "--to", "oci")
    assert json.loads(again.stdout) == data


@pytest.mark.parametrize("line, message", [
    ("listener_path: agent", "listener_path takes a double-quoted string, not 'agent'"),
    ('listener_path: ""', "listener_path must not be empty"),
    ('listener_metadata: "\\q"', "malformed string"),
])
def test_listener_setting_errors(line, message):
    with pytest.raises(SourceError, match=message):
        parse_policy(line + "\n")


def test_convert_to_oci_warns_about_32_bit_tests(tmp_path):
    f = tmp_path / "w.policy"
    f.write_text("default: allow\nwrite: fd == 1 -> errno(1)\nread: u64(fd) == 2 -> errno(1)\n")
    out = sysgate("policy", "convert", f, "--to", "oci")
    assert out.returncode == 0
    assert out.stderr == ("warning: write: 32-bit argument tests become 64-bit comparisons in OCI (libseccomp's "
                          "width); a call with the upper half of such an argument set no longer matches them\n")


@pytest.mark.parametrize("name", ["\\u0000", "\\ud800", "a\\u0000b"])
def test_include_names_that_cannot_be_paths_are_errors(name):
    with pytest.raises(SourceError, match="cannot include"):
        parse_policy(f'include "{name}"\n', "x.policy", base_dir="/nonexistent")


def test_json_with_a_byte_order_mark(tmp_path):
    f = tmp_path / "bom.json"
    f.write_bytes(b'\xef\xbb\xbf{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
                  b'"action": "SCMP_ACT_ERRNO"}]}')
    assert load_policy(str(f)).decide("read")[0] == Action("errno", errno.EPERM)


def test_include_chain_depth_is_limited(tmp_path):
    from sysgate.policy.parser import MAX_INCLUDES

    for i in range(200):
        (tmp_path / f"{i}.policy").write_text(f'include "{i + 1}.policy"\nread: allow\n')
    (tmp_path / "200.policy").write_text("read: allow\n")
    assert f"includes nested deeper than {MAX_INCLUDES} files" in one_error_line(
        sysgate("policy", "check", tmp_path / "0.policy"))
    (tmp_path / f"{MAX_INCLUDES - 1}.policy").write_text("write: allow\n")
    assert sysgate("policy", "check", tmp_path / "0.policy").returncode == 0


MOBY = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"


def test_unknown_rule_arch_is_a_warning_that_never_matches():
    seen = []
    policy = import_oci(with_(["syscalls", 0, "includes"], {"arches": ["amd46"]}), "x86_64", warn=seen.append)
    assert any("$.syscalls[0].includes.arches[0]: unknown architecture" in w and "never matches" in w for w in seen)
    assert len(policy.rules) < len(import_oci(with_(["syscalls", 0, "includes"], {}), "x86_64").rules)


@pytest.mark.skipif(not os.path.exists(MOBY), reason="Debian's golang-github-docker-docker-dev not installed")
def test_moby_default_profile_with_its_typo_loads(tmp_path):
    """moby's own default.json names the arch "mips3l64n32" in a rule's includes/excludes: Docker
    compares those as strings, so it only never matches. A warning (with its path), not an error."""
    seen = []
    policy = load_policy(MOBY, arch="x86_64", warn=seen.append)
    assert policy.rules and any("mips3l64n32" in w and "never matches" in w for w in seen), seen
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_MIPS3L64N32"]}))
    with pytest.raises(SysgateError, match=r"\$\.architectures\[0\]: unknown architecture"):
        load_policy(str(bad), arch="x86_64")
