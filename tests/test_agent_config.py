"""Handler selection: seccompagent KEY=VALUE metadata, sysgate keys, the JSON config file."""
from __future__ import annotations

import errno
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysgate.agent import container_handlers
from sysgate.agent.config import (AgentConfig, ConfigError, HandlerSpec, Selection, apply_metadata,
                                  expand_template, parse_metadata)
from sysgate.agent.protocol import ContainerProcessState
from sysgate.errors import SourceError
from sysgate.supervisor.notification import Reply

CTX = {"Pid": 42, "Pid1": 1, "Container": "c", "Pod": "", "Namespace": ""}
KEYS = st.text(st.characters(blacklist_characters="=\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), min_size=1,
               max_size=10)
VALUES = st.text(st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=20)


def names(selection: Selection) -> list[str]:
    return [str(h) for h in selection.handlers]


@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_metadata_lines_round_trip(pairs):
    text = "\n".join(f"{k}={v}" for k, v in pairs.items())
    assert parse_metadata(text) == pairs


def test_metadata_follows_seccompagent_rules():
    assert parse_metadata("A=1\nFLAG\n=skipped\nB=x=y\nA=2\n") == {"A": "2", "FLAG": "", "B": "x=y"}


def test_sysgate_keys():
    sel = apply_metadata(Selection(), "handlers=mkdir-emulate, mknod-emulate,mount-deny:EACCES\ndefault=deny:EIO",
                         CTX)
    assert names(sel) == ["mkdir-emulate", "mknod-emulate", "mount-deny:EACCES"]
    assert sel.default == HandlerSpec("deny", "EIO")


def test_seccompagent_keys():
    sel = apply_metadata(Selection(), "MKDIR_TMPL=-pid-{{.Pid}}-{{ .Container }}\nMOUNT_PROC=true\n"
                                      "DEFAULT_ACTION=kill-container\nEXEC_PATTERN=ignored", CTX)
    assert names(sel) == ["mkdir-suffix:-pid-42-c", "mount-emulate:proc"]
    assert sel.default.name == "kill-container"


@pytest.mark.parametrize("metadata, message", [
    ("default=allow", "default verdict must be one of"),
    ("handlers=bad name", "bad handler name"),
    ("MKDIR_TMPL={{.Nope}}", "unknown field"),
    ("DEFAULT_ACTION=freeze-container", "not supported"),
])
def test_bad_metadata(metadata, message):
    with pytest.raises(ConfigError, match=message):
        apply_metadata(Selection(), metadata, CTX)


def test_template_without_fields_is_literal():
    assert expand_template("-suffix", CTX) == "-suffix"


CONFIG = {
    "default": {"handlers": ["mkdir-deny"]},
    "containers": [
        {"id": "web-*", "annotations": {"tier": "front"}, "handlers": ["mknod-emulate"], "metadata": False},
        {"id": "web-*", "handlers": ["mount-deny"], "default": "deny:EACCES"},
    ],
}


def test_config_first_match_wins_and_metadata_switch():
    config = AgentConfig.parse(json.dumps(CONFIG))
    front = config.select("web-1", {"tier": "front"}, "handlers=mkdir-emulate", CTX)
    assert names(front) == ["mknod-emulate"]                       # metadata ignored
    back = config.select("web-2", {"tier": "back"}, "handlers=mkdir-emulate", CTX)
    assert names(back) == ["mount-deny", "mkdir-emulate"] and back.default == HandlerSpec("deny", "EACCES")
    other = config.select("db", {}, "", CTX)
    assert names(other) == ["mkdir-deny"] and other.default.name == "continue"


@pytest.mark.parametrize("text, message", [
    ("{", "Expecting"),
    ("[]", "must be an object"),
    ('{"default": {"handler": []}}', "unknown key"),
    ('{"containers": [{"id": 3}]}', r"containers\[0\].id must be a string"),
    ('{"containers": [{"annotations": {"a": 1}}]}', "annotations must map strings"),
    ('{"default": {"default": "maybe"}}', "default verdict"),
    ('{"containers": [{"handlers": ["mkdir-dney"]}]}',
     r"containers\[0\].handlers: unknown handler 'mkdir-dney' .*did you mean 'mkdir-deny'\?"),
])
def test_bad_config_files_are_source_errors(text, message):
    with pytest.raises(SourceError, match=message):
        AgentConfig.parse(text, "agent.json")


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text('{\n  "default": [}\n')
    with pytest.raises(SourceError, match=r"agent.json:2:\d+"):
        AgentConfig.load(str(path))


STATE = ContainerProcessState("1.0.2", 1, "", "c", "creating", 1, "/b", {})


def test_build_maps_handlers_to_syscalls_and_later_wins():
    sel = apply_metadata(Selection(), "handlers=mkdir-emulate,mkdir-deny:EROFS,mount-deny\ndefault=deny", CTX)
    hs = container_handlers.build(sel, STATE)
    assert set(hs.handlers) == {"mkdir", "mkdirat", "mount"}
    assert hs.handlers["mkdirat"](None) == Reply.errno(errno.EROFS)
    assert hs.handlers["mount"](None) == Reply.errno(errno.EPERM)
    assert hs.fallback(None) == Reply.errno(errno.EPERM)


def test_build_rejects_unknown_handlers_and_errnos():
    with pytest.raises(ConfigError, match="unknown handler 'mount-everything'"):
        container_handlers.build(apply_metadata(Selection(), "handlers=mount-everything", CTX), STATE)
    with pytest.raises(ConfigError, match="unknown errno"):
        container_handlers.build(apply_metadata(Selection(), "handlers=mount-deny:ENOPE", CTX), STATE)


@pytest.mark.parametrize("metadata, message", [
    ("MOUNT_PROC=true", "proc is not supported"),        # the helper is not in the container's pid ns
    ("MOUNT_SYSFS=true", "sysfs is not supported"),
    ("handlers=mount-emulate", "needs filesystem types"),
    ("handlers=mount-emulate:tmpfs+ext4", "unsupported filesystem type 'ext4'"),
])
def test_mount_emulate_fails_closed_on_unsupported_filesystems(metadata, message):
    with pytest.raises(ConfigError, match=message):
        container_handlers.build(apply_metadata(Selection(), metadata, CTX), STATE)


def test_emulation_is_the_container_handler():
    from sysgate.handlers import ContainerHandler
    sel = apply_metadata(Selection(), "handlers=mkdir-emulate,mknod-emulate,mount-emulate:tmpfs", CTX)
    hs = container_handlers.build(sel, STATE)
    assert set(hs.handlers) == {"mkdir", "mkdirat", "mknod", "mknodat", "mount"}
    assert all(isinstance(h, ContainerHandler) and h.blocking for h in hs.handlers.values())
    assert [r.fstype for r in hs.handlers["mount"].mounts] == ["tmpfs"]
    hs.close()


def test_shipped_example_config_builds(tmp_path):
    import pathlib
    examples = pathlib.Path(__file__).resolve().parent.parent / "examples" / "oci"
    config = AgentConfig.load(str(examples / "agent.json"))
    profile = json.loads((examples / "seccomp-notify.json").read_text())
    for cid, container_annotations in (("build-1", {}), ("x", {"sysgate.io/profile": "locked"}), ("other", {})):
        sel = config.select(cid, container_annotations, profile["listenerMetadata"], CTX)
        assert container_handlers.build(sel, STATE).handlers
