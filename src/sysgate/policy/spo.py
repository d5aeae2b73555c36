"""Kubernetes Security Profiles Operator ``SeccompProfile`` resources in YAML: read and write.

Reading decodes the YAML strictly into the same value a JSON ``SeccompProfile`` decodes to,
then validates it with :func:`.oci.import_oci`, so errors carry the same ``$.spec...`` paths.
PyYAML's ``SafeLoader`` alone would keep the last of two equal keys, build Python-only values
(timestamps, ``!!binary``, ``!!set``), raise RecursionError on deep nesting and let a few
aliases stand for billions of nodes ("billion laughs": the objects are shared, but every
walk over them is exponential). Here, as for JSON: nesting is limited to
:data:`.jsondoc.MAX_DEPTH` *after* alias expansion (which also stops recursive aliases), the
expanded document to :data:`MAX_NODES` nodes, keys must be unique scalars, values are
JSON's (strings, integers of at most 1024 bits, finite floats, booleans, null, lists,
mappings; a date stays a string), merge keys (``<<``) are refused.

Writing exports the policy as OCI rules (:func:`.oci.export_oci`) into ``spec``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable

import yaml

from ..errors import SourceError, SysgateError
from . import jsondoc
from .jsondoc import short
from .model import Policy
from .oci import SPO_VERSIONS, export_oci, import_oci

#: Most nodes a YAML document may stand for once its aliases are expanded.
MAX_NODES = 1_000_000
#: The operator (v1.0 CRD schema) only accepts a ``listenerPath`` directly in this directory.
SPO_LISTENER_DIR = "/var/run/security-profiles-operator/"
_LISTENER_PATH = re.compile(re.escape(SPO_LISTENER_DIR) + r"[a-zA-Z0-9_.-]+\Z")
#: What the operator's CRD schema accepts (enums; argument values are int64).
SPO_ARCHES = frozenset(f"SCMP_ARCH_{a}" for a in (
    "NATIVE X86 X86_64 X32 ARM AARCH64 MIPS MIPS64 MIPS64N32 MIPSEL MIPSEL64 MIPSEL64N32 PPC PPC64 PPC64LE "
    "S390 S390X PARISC PARISC64 RISCV64").split())
SPO_FLAGS = frozenset(f"SECCOMP_FILTER_FLAG_{f}" for f in ("TSYNC", "LOG", "SPEC_ALLOW", "WAIT_KILLABLE_RECV"))
INT64_MAX = (1 << 63) - 1
#: The API version written (the operator serves v1beta1 and v1).
WRITE_VERSION = "security-profiles-operator.x-k8s.io/v1beta1"
assert WRITE_VERSION in SPO_VERSIONS

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_TAG = "tag:yaml.org,2002:"
_MAX_INT_BITS = 1024


# --- reading -----------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader limited to JSON's values, unique keys and bounded nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self.nesting = 0

    def compose_node(self, parent, index):
        # The composer recurses once per level: stop before Python's recursion limit does.
        self.nesting += 1
        try:
            if self.nesting > jsondoc.MAX_DEPTH + 1:
                raise yaml.composer.ComposerError(
                    None, None, f"YAML nested deeper than {jsondoc.MAX_DEPTH} levels (the limit for profiles)",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1

    def flatten_mapping(self, node):
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                raise yaml.constructor.ConstructorError(None, None, "YAML merge keys (<<) are not supported",
                                                        key_node.start_mark)

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, f"expected a mapping, not {node.id}",
                                                    node.start_mark)
        self.flatten_mapping(node)
        mapping: dict = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key_node, yaml.ScalarNode) or not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                        key_node.start_mark)
            if key in mapping:
                raise yaml.constructor.ConstructorError(None, None, f"the key {short(key)} appears twice in one "
                                                        "mapping", key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_int(self, node):
        text = node.value.replace("_", "").lstrip("+-")
        if len(text) > _MAX_INT_BITS:           # a bound before converting (int() is quadratic in digits)
            raise _too_large(node)
        value = super().construct_yaml_int(node)
        if value.bit_length() > _MAX_INT_BITS:
            raise _too_large(node)
        return value

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(None, None, f"{node.value} is not a finite number",
                                                    node.start_mark)
        return value


def _too_large(node) -> yaml.YAMLError:
    return yaml.constructor.ConstructorError(None, None, f"integer of more than {_MAX_INT_BITS} bits",
                                             node.start_mark)


_JSON_TAGS = ("str", "int", "float", "bool", "null", "seq", "map")
_Loader.yaml_constructors = {
    **{_TAG + t: yaml.SafeLoader.yaml_constructors[_TAG + t] for t in _JSON_TAGS},
    _TAG + "int": _Loader.construct_yaml_int,
    _TAG + "float": _Loader.construct_yaml_float,
    None: yaml.SafeLoader.yaml_constructors[None],          # any other tag: "could not determine a constructor"
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_expansion(root, filename: str) -> None:
    """The document's nodes with every alias expanded: at most MAX_NODES, nested at most
    MAX_DEPTH deep. Linear in the composed nodes (each node's size is computed once); a
    recursive alias is infinitely deep."""
    sizes: dict[int, tuple[int, int]] = {}           # id(node) -> (nodes, height)

    def measure(node, depth: int) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is None:
            if depth > jsondoc.MAX_DEPTH:
                raise _source_error(f"YAML nested deeper than {jsondoc.MAX_DEPTH} levels once its aliases are "
                                    f"expanded (the limit for profiles)", filename, node.start_mark)
            count, height = 1, 0
            children = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else ())
            for child in children:
                c, h = measure(child, depth + 1)
                count, height = count + c, max(height, h + 1)
                if count > MAX_NODES:
                    raise _source_error(f"YAML aliases expand to more than {MAX_NODES} nodes", filename,
                                        node.start_mark)
            known = sizes[id(node)] = (count, height)
        if depth + known[1] > jsondoc.MAX_DEPTH:
            raise _source_error(f"YAML nested deeper than {jsondoc.MAX_DEPTH} levels once its aliases are "
                                f"expanded (the limit for profiles)", filename, node.start_mark)
        return known

    measure(root, 1)


def _source_error(message: str, filename: str, mark) -> SourceError:
    return SourceError(message, filename, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0)


def decode_documents(text: str, filename: str) -> list:
    """Every document of a YAML stream as JSON-like values (empty documents left out);
    SourceError with line and column for anything outside the limits above."""
    return [value for _, value in _documents(text, filename)]


def _documents(text: str, filename: str) -> list[tuple]:
    """(node, value) of every non-empty document."""
    text = text.removeprefix("\ufeff")
    documents = []
    loader = None
    try:
        loader = _Loader(text)
        while loader.check_node():
            node = loader.get_node()
            _check_expansion(node, filename)
            value = loader.construct_document(node)
            if value is not None:
                documents.append((node, value))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        raise _source_error(f"invalid YAML: {problem}", filename, mark) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SourceError(f"invalid YAML: character U+{exc.character:04X} is not allowed ({exc.reason})",
                          filename, line, column) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"invalid YAML: {' '.join(str(exc).split())}", filename) from None
    except (ValueError, RecursionError) as exc:
        raise SourceError(f"invalid YAML: {exc}", filename) from None
    finally:
        if loader is not None:
            loader.dispose()
    return documents


def decode(text: str, filename: str) -> dict:
    """The one ``SeccompProfile`` in a YAML stream. A stream of several documents must hold
    exactly one (a ``Namespace`` or ``ConfigMap`` beside it is ignored)."""
    return _decode(text, filename)[1]


def _decode(text: str, filename: str) -> tuple:
    documents = _documents(text, filename)
    if not documents:
        raise SourceError("the YAML file holds no document", filename)
    profiles = [(n, d) for n, d in documents if type(d) is dict and d.get("kind") == "SeccompProfile"]
    if len(documents) == 1:
        node, doc = documents[0]
        if type(doc) is not dict or ("kind" not in doc and "apiVersion" not in doc):
            raise SourceError("$: a YAML policy must be a Kubernetes SeccompProfile "
                              f"(apiVersion: {WRITE_VERSION}, kind: SeccompProfile)", filename)
        return node, doc
    if len(profiles) != 1:
        raise SourceError(f"{len(documents)} YAML documents with {len(profiles)} SeccompProfile(s): sysgate "
                          f"reads exactly one", filename)
    return profiles[0]


_PATH_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _locate(root, message: str):
    """The YAML node at the JSON path that starts ``message`` (``$.spec.syscalls[2]: ...``), as
    far as the path leads; None when the message has no path."""
    if not message.startswith("$"):
        return None
    node, pos = root, 1
    while m := _PATH_STEP.match(message, pos):
        pos = m.end()
        name, index, quoted = m.groups()
        if isinstance(node, yaml.SequenceNode) and index is not None and int(index) < len(node.value):
            node = node.value[int(index)]
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        key = name if name is not None else index if index is not None else _unquote(quoted)
        found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if not found:
            break
        node = found[0]
    return node


def _unquote(text: str) -> str:
    import json

    try:
        return str(json.loads(text))
    except ValueError:
        return text


def import_spo(text: str, arch: str | None = None, *, filename: str = "<yaml>",
               warn: Callable[[str], None] | None = None, caps=None, kernel=None) -> Policy:
    """A Policy from a ``SeccompProfile`` resource in YAML (see :func:`.oci.import_oci`). A
    validation error names the JSON path, as for JSON, and the line and column of that place."""
    node, doc = _decode(text, filename)
    try:
        return import_oci(doc, arch, filename=filename, warn=warn, caps=caps, kernel=kernel)
    except SourceError as exc:
        place = _locate(node, exc.message) if not exc.line else None
        if place is None:
            raise
        raise _source_error(exc.message, exc.file, place.start_mark) from None


# --- writing -----------------------------------------------------------------------------------
def resource_name(text: str) -> str:
    """``text`` (a file name) made a valid Kubernetes object name (DNS-1123 subdomain)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip(".-")[:253].strip(".-")
    return name or "sysgate-profile"


def listener_problem(policy: Policy) -> str | None:
    """Why the operator would reject the policy's ``listenerPath``, or None."""
    path = policy.listener_path
    if path and not _LISTENER_PATH.match(path):
        return (f"listenerPath {path!r} is not a file name directly in {SPO_LISTENER_DIR}; the Security "
                f"Profiles Operator rejects such a SeccompProfile")
    return None


def export_spo(policy: Policy, *, name: str | None = None, namespace: str | None = None,
               warn: Callable[[str], None] | None = None, header: str | None = None) -> str:
    """``policy`` as a ``SeccompProfile`` resource (YAML text, ``apiVersion`` :data:`WRITE_VERSION`).
    ``name`` defaults to the policy's name. SysgateError for an invalid name or namespace;
    ``warn`` gets what the resource cannot express (see :func:`export_oci`) and a
    ``listenerPath`` the operator would reject."""
    say = warn or (lambda message: None)
    name = resource_name(policy.name or "") if name is None else name
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise SysgateError(f"--name: {short(name)} is not a Kubernetes object name (lower-case letters, digits, "
                           f"'-' and '.', at most 253)")
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        raise SysgateError(f"--namespace: {short(namespace)} is not a Kubernetes namespace (lower-case letters, "
                           f"digits and '-', at most 63)")
    spec = export_oci(policy, warn=say)
    errno_ret = spec.pop("defaultErrnoRet", None)
    if errno_ret is not None and errno_ret != 1:
        say(f"the default action's errno {errno_ret} has no SeccompProfile field; runc returns EPERM (1)")
    problem = listener_problem(policy)
    if problem:
        say(problem)
    for what, values, known in (("architecture", spec.get("architectures", ()), SPO_ARCHES),
                                ("filter flag", spec.get("flags", ()), SPO_FLAGS)):
        for value in values:
            if value not in known:
                say(f"the operator's SeccompProfile schema has no {what} {value}")
    wide = sorted({n for entry in spec["syscalls"] for n in entry["names"]
                   if any(arg[k] > INT64_MAX for arg in entry.get("args", ()) for k in ("value", "valueTwo"))})
    if wide:
        say(f"{', '.join(wide)}: argument values above 2^63-1, which the operator's schema (int64) rejects")
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    doc = {"apiVersion": WRITE_VERSION, "kind": "SeccompProfile", "metadata": metadata, "spec": spec}
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)
    if header:
        text = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines()) + text
    return text
