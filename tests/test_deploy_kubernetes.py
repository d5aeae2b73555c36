"""deploy/kubernetes: the agent DaemonSet, its ConfigMap, the example SeccompProfile and pod.

Every manifest is parsed with ``yaml.safe_load_all`` and its fields checked against the
Kubernetes API objects they are (only known fields, required fields, names that refer to
each other); the ConfigMap's agent config goes through the agent's own loader and handler
builder, the SeccompProfile through sysgate's policy loader, the agent's command line through
sysgate's argument parser.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from sysgate.agent.config import AgentConfig, apply_metadata
from sysgate.agent.container_handlers import build
from sysgate.cli import build_parser
from sysgate.policy_loader import load_policy
from sysgate.policy.spo import listener_problem

KUBE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
HOST_PATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"}

# Fields of the API objects used here (core/v1, apps/v1); anything else is a typo the API server would drop
# or reject.
OBJECT = {"apiVersion", "kind", "metadata", "spec", "data", "binaryData", "immutable", "handler", "overhead",
          "scheduling"}
METADATA = {"name", "namespace", "labels", "annotations"}
DAEMONSET_SPEC = {"selector", "template", "updateStrategy", "minReadySeconds", "revisionHistoryLimit"}
POD_SPEC = {"containers", "initContainers", "volumes", "hostPID", "hostNetwork", "hostIPC", "tolerations",
            "priorityClassName", "nodeSelector", "serviceAccountName", "securityContext", "runtimeClassName",
            "affinity", "terminationGracePeriodSeconds"}
CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "env", "securityContext", "volumeMounts",
             "resources", "ports", "livenessProbe", "readinessProbe"}
VOLUME_SOURCES = {"hostPath", "configMap", "emptyDir", "secret", "projected"}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}


def documents(name: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d is not None]
    for doc in docs:
        assert set(doc) <= OBJECT and {"apiVersion", "kind", "metadata"} <= set(doc), (name, sorted(doc))
        assert set(doc["metadata"]) <= METADATA
        assert DNS_SUBDOMAIN.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 253
        for key, value in doc["metadata"].get("labels", {}).items():
            assert isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63, key
    return docs


def one(name: str, kind: str) -> dict:
    found = [d for d in documents(name) if d["kind"] == kind]
    assert len(found) == 1, (name, kind)
    return found[0]


DAEMONSET = one("agent-daemonset.yaml", "DaemonSet")
NAMESPACE = one("agent-daemonset.yaml", "Namespace")
CONFIGMAP = one("agent-configmap.yaml", "ConfigMap")
PROFILE_FILE = KUBE / "seccompprofile-example.yaml"
PROFILE = one(PROFILE_FILE.name, "SeccompProfile")
AGENT = DAEMONSET["spec"]["template"]["spec"]["containers"][0]


def agent_args():
    command = AGENT["command"]
    assert command[:2] == ["sysgate", "agent"]
    return build_parser().parse_args(command[1:])


def test_daemonset_is_a_valid_apps_v1_daemonset():
    ds = DAEMONSET
    assert ds["apiVersion"] == "apps/v1" and ds["metadata"]["namespace"] == NAMESPACE["metadata"]["name"]
    assert NAMESPACE["apiVersion"] == "v1" and DNS_LABEL.match(NAMESPACE["metadata"]["name"])
    spec = ds["spec"]
    assert set(spec) <= DAEMONSET_SPEC and {"selector", "template"} <= set(spec)
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") in ("RollingUpdate", "OnDelete")
    selector = spec["selector"]["matchLabels"]
    assert selector and set(spec["selector"]) == {"matchLabels"}
    labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), "the selector must match the template's labels"
    pod = spec["template"]["spec"]
    assert set(pod) <= POD_SPEC and pod["containers"]
    assert pod["hostPID"] is True            # notifications name host pids; handlers open /proc/PID
    names = [c["name"] for c in pod["containers"]]
    assert len(set(names)) == len(names) and all(DNS_LABEL.match(n) for n in names)
    for c in pod["containers"]:
        assert set(c) <= CONTAINER and isinstance(c.get("image"), str) and c["image"]
        assert c.get("imagePullPolicy", "Always") in PULL_POLICIES
        assert all(isinstance(word, str) for word in c.get("command", []) + c.get("args", []))
    for t in pod.get("tolerations", []):
        assert t.get("operator", "Equal") in ("Exists", "Equal")


def test_volumes_and_mounts_agree():
    pod = DAEMONSET["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"]) and all(DNS_LABEL.match(n) for n in volumes)
    for volume in volumes.values():
        sources = set(volume) - {"name"}
        assert len(sources) == 1 and sources <= VOLUME_SOURCES, volume
        if "hostPath" in volume:
            assert set(volume["hostPath"]) <= {"path", "type"}
            assert volume["hostPath"].get("type", "") in HOST_PATH_TYPES
            assert PurePosixPath(volume["hostPath"]["path"]).is_absolute()
        if "configMap" in volume:
            assert volume["configMap"]["name"] == CONFIGMAP["metadata"]["name"]
    for container in pod["containers"]:
        mounts = container["volumeMounts"]
        assert all(set(m) <= {"name", "mountPath", "readOnly", "subPath"} for m in mounts)
        assert {m["name"] for m in mounts} <= set(volumes), "every volumeMount names a volume"
        paths = [m["mountPath"] for m in mounts]
        assert len(set(paths)) == len(paths) and all(PurePosixPath(p).is_absolute() for p in paths)


def mount_of(path: str) -> dict:
    """The volume whose mount holds ``path`` in the agent container."""
    volumes = {v["name"]: v for v in DAEMONSET["spec"]["template"]["spec"]["volumes"]}
    for m in AGENT["volumeMounts"]:
        if PurePosixPath(path).parent == PurePosixPath(m["mountPath"]):
            return {**volumes[m["name"]], "mountPath": m["mountPath"]}
    raise AssertionError(f"{path} is on no volume")


def test_agent_socket_is_the_profiles_listener_on_the_host():
    """The agent's socket lies on a hostPath mounted at the same path, so runc (on the host) finds it
    at the SeccompProfile's listenerPath; the operator accepts that path."""
    args = agent_args()
    volume = mount_of(args.socket)
    assert volume["hostPath"]["path"] == volume["mountPath"] and volume["hostPath"]["type"] == "DirectoryOrCreate"
    assert args.socket == PROFILE["spec"]["listenerPath"]
    assert listener_problem(load_policy(str(PROFILE_FILE))) is None


def test_configmap_is_the_agents_config():
    assert CONFIGMAP["apiVersion"] == "v1"
    assert CONFIGMAP["metadata"]["namespace"] == DAEMONSET["metadata"]["namespace"]
    assert all(isinstance(v, str) for v in CONFIGMAP["data"].values())
    args = agent_args()
    volume = mount_of(args.config)
    assert "configMap" in volume
    key = PurePosixPath(args.config).name
    config = AgentConfig.parse(CONFIGMAP["data"][key], key)
    selections = [config.default] + [entry[2] for entry in config.entries]
    assert config.entries and config.default.handlers
    for selection in selections:
        handlers = build(selection, None)            # every handler name and errno exists
        assert handlers.handlers and handlers.fallback is not None
    # the example profile's listenerMetadata refines the default selection into valid handlers
    refined = apply_metadata(config.default, PROFILE["spec"]["listenerMetadata"], {})
    assert {s.name for s in refined.handlers} >= {"mkdir-deny", "mount-deny"}
    assert set(build(refined, None).handlers) >= {"mkdir", "mkdirat", "mount"}


def test_example_seccompprofile_loads_through_sysgate():
    warnings = []
    policy = load_policy(str(PROFILE_FILE), arch="x86_64", warn=warnings.append)
    assert warnings == []
    assert PROFILE["apiVersion"] == "security-profiles-operator.x-k8s.io/v1beta1"
    assert policy.listener_path == PROFILE["spec"]["listenerPath"]
    notified = sorted(r.syscall for r in policy.rules if r.action.kind == "notify")
    assert notified == ["mkdir", "mkdirat", "mknod", "mknodat", "mount"]
    assert policy.decide("mkdir")[0].kind == "notify" and policy.decide("kexec_load")[0].data == 1


def test_example_pod_uses_the_operator_installed_profile():
    pod = one("pod-spo-example.yaml", "Pod")
    assert pod["apiVersion"] == "v1" and set(pod["spec"]) <= POD_SPEC
    seccomp = pod["spec"]["securityContext"]["seccompProfile"]
    # operator v0.9+ (cluster-scoped profiles): status.localhostProfile is operator/NAME.json
    assert seccomp == {"type": "Localhost", "localhostProfile": f"operator/{PROFILE['metadata']['name']}.json"}
    for c in pod["spec"]["containers"]:
        assert set(c) <= CONTAINER and c["image"] and DNS_LABEL.match(c["name"])


@pytest.mark.parametrize("name", sorted(p.name for p in KUBE.glob("*.yaml")))
def test_every_manifest_parses(name):
    assert documents(name)
