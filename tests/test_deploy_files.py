"""The deployment files under deploy/ (Docker, containerd, CRI-O, Kubernetes) parse and agree with each other.

JSON and TOML are read with the standard library; the YAML files are checked line by line
(no YAML parser is a dependency). containerd itself checks its handler config when it is installed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from sysgate.runtime.argv import split_wrapper_options

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HANDLER = "sysgate"
SCRIPT = "/usr/local/bin/sysgate-runc-agent"


def wrapper_options(words: list[str]) -> dict:
    """sysgate-runc's own options in ``words``; nothing may be left for the runtime."""
    opts, rest = split_wrapper_options(words)
    assert rest == [], rest
    return vars(opts)


def test_docker_daemon_json():
    runtime = json.loads((DEPLOY / "docker/daemon.json").read_text())["runtimes"][HANDLER]
    assert runtime["path"] == "/usr/local/bin/sysgate-runc"
    # dockerd writes `PATH ARGS... $@` into a shell script unquoted: no spaces or shell characters
    assert all(re.fullmatch(r"[\w@%+=:,./-]+", arg) for arg in runtime["runtimeArgs"])
    assert wrapper_options(runtime["runtimeArgs"])["agent_socket"] == "/run/sysgate-agent.sock"


def test_wrapper_script_passes_everything_through():
    script = DEPLOY / "bin/sysgate-runc-agent"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    [line] = [text for text in script.read_text().splitlines() if text.startswith("exec ")]
    words = shlex.split(line)
    assert words[:2] == ["exec", "/usr/local/bin/sysgate-runc"] and words[-1] == "$@"
    assert wrapper_options(words[2:-1])["runtime"] == "/usr/sbin/runc"


def test_containerd_handler():
    text = (DEPLOY / "kubernetes/containerd-sysgate.toml").read_text()
    config = tomllib.loads(text)
    runtime = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"][HANDLER]
    assert config["version"] == 2 and runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["BinaryName"] == SCRIPT and runtime["pod_annotations"] == ["io.sysgate.*"]
    if not os.access("/usr/bin/containerd", os.X_OK):
        pytest.skip("containerd is not installed (Debian package containerd)")
    dump = subprocess.run(["/usr/bin/containerd", "--config", str(DEPLOY / "kubernetes/containerd-sysgate.toml"),
                           "config", "dump"], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    merged = tomllib.loads(dump.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert merged[HANDLER]["options"]["BinaryName"] == SCRIPT and merged[HANDLER]["pod_annotations"] == ["io.sysgate.*"]


def test_crio_handler():
    runtime = tomllib.loads((DEPLOY / "kubernetes/crio-sysgate.conf").read_text())["crio"]["runtime"]["runtimes"]
    assert runtime[HANDLER]["runtime_path"] == SCRIPT and runtime[HANDLER]["runtime_type"] == "oci"


def yaml_lines(name: str) -> list[str]:
    """Non-comment lines of a deploy/kubernetes YAML file (checked for tabs: YAML forbids them)."""
    text = (DEPLOY / "kubernetes" / name).read_text()
    assert "\t" not in text
    return [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_runtimeclass_names_the_handler():
    assert yaml_lines("runtimeclass.yaml") == [
        "apiVersion: node.k8s.io/v1", "kind: RuntimeClass", "metadata:", f"  name: {HANDLER}", f"handler: {HANDLER}"]


def test_pod_example_uses_the_runtimeclass():
    lines = yaml_lines("pod-example.yaml")
    assert lines[:2] == ["apiVersion: v1", "kind: Pod"]
    assert f"  runtimeClassName: {HANDLER}" in lines
    assert '    io.sysgate.handlers: "mkdir-deny:EROFS"' in lines
    assert "      type: Localhost" in lines
