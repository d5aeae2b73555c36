"""``sysgate policy check|convert|groups|docs``: validate, translate and explore policies."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("policy", help="check, convert and explore seccomp policies",
                       description="Work with policy files: the sysgate language, OCI runtime-spec "
                                   "seccomp JSON and Docker/podman profile templates.")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True

    check = psub.add_parser("check", help="parse a policy and report errors and warnings")
    check.add_argument("file", help="policy file (text, JSON or a SeccompProfile in YAML; - for standard input)")
    _selection_options(check)
    check.add_argument("--strict", action="store_true", help="exit with status 1 when there are warnings")
    check.add_argument("--handlers", action="append", metavar="CONFIG|FILE.py[:NAME]|MODULE:NAME",
                       help="as for run: a handler config (then also say which layer, Landlock or notify, "
                            "enforces each rule) and/or custom Python handlers the policy may name in notify(NAME)")
    check.set_defaults(func=run_check)

    convert = psub.add_parser("convert", help="translate a policy to the text language, OCI JSON, a "
                                              "Kubernetes SeccompProfile or a systemd drop-in")
    convert.add_argument("file", help="policy file (text, JSON, a SeccompProfile in YAML or a systemd unit; "
                                      "- for standard input)")
    convert.add_argument("--to", choices=("text", "oci", "spo", "systemd"), required=True,
                         help="output format (spo: a Kubernetes Security Profiles Operator SeccompProfile in YAML; "
                              "systemd: a [Service] drop-in with SystemCallFilter= lines)")
    convert.add_argument("--name", help="spo: the SeccompProfile's metadata.name (default: from the file name)")
    convert.add_argument("--namespace", help="spo: its metadata.namespace (default: none)")
    convert.add_argument("--strict", action="store_true",
                         help="spo: refuse a listenerPath the operator would reject (outside "
                              "/var/run/security-profiles-operator/) instead of warning")
    convert.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    _selection_options(convert)
    convert.set_defaults(func=run_convert)

    grp = psub.add_parser("groups", help="list the named syscall groups (@file-system, …) and systemd's",
                          description="sysgate's groups are @NAME; systemd's groups (exactly systemd's "
                                      "members) are @systemd:NAME.")
    grp.add_argument("names", nargs="*", help="groups to show in full, e.g. @mount or @systemd:mount "
                                              "(default: all, one line each)")
    grp.set_defaults(func=run_groups)

    from .docs import register_policy_docs

    register_policy_docs(psub)


def _selection_options(p) -> None:
    p.add_argument("--arch", help="JSON profiles: target architecture for archMap/includes (default: native)")
    p.add_argument("--caps", metavar="CAP,...",
                   help="JSON profiles: container capabilities for includes/excludes (default: Docker's set)")
    p.add_argument("--kernel", metavar="X.Y",
                   help="JSON profiles: kernel version for minKernel (default: the running kernel)")


def _load(args, warnings: list[str]):
    from ..policy_loader import load_policy
    from ..policy.oci import parse_caps, parse_kernel

    caps = None if args.caps is None else [c.strip() for c in args.caps.split(",") if c.strip()]
    if caps is not None:
        parse_caps(caps)                        # checked even when a text policy will not use them
    if args.kernel is not None:
        parse_kernel(args.kernel)
    return load_policy(args.file, arch=args.arch, caps=caps, kernel=args.kernel, warn=warnings.append)


def run_check(args) -> int:
    from ..policy.printer import action_text
    from ..sandbox.coverage import coverage_warnings

    warnings: list[str] = []
    policy = _load(args, warnings)
    from ..handlers.loading import handler_options

    config, custom = handler_options(args.handlers)
    _check_handler_names(policy, set(custom))
    warnings += [f"{args.file}: policy {w}" for w in coverage_warnings(policy)]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    conditional = sum(1 for r in policy.rules if r.condition is not None)
    verdict = "not ok (--strict)" if warnings and args.strict else "ok"
    print(f"{args.file}: {verdict}: {len(policy.rules)} rules ({conditional} conditional) for "
          f"{len(policy.syscalls())} syscalls; default {action_text(policy.default)}; arch {', '.join(policy.arches)}"
          + (f"; {len(warnings)} warning(s)" if warnings else ""))
    if config is not None:
        from ..sandbox.landlock import rule_layers

        print("\n".join(rule_layers(policy, config)))
    return 1 if warnings and args.strict else 0


def _check_handler_names(policy, custom=frozenset()) -> None:
    """Every ``notify(NAME)`` must name a registered handler or one of ``custom``, as ``run`` requires."""
    from ..errors import SourceError, SysgateError
    from ..handlers import registry

    for rule in policy.rules:
        if rule.action.kind == "notify" and rule.action.handler and rule.action.handler not in custom:
            try:
                registry.lookup(rule.action.handler)
            except SysgateError as exc:
                file, line = rule.source or (policy.name, 0)
                raise SourceError(str(exc), file, line) from None


def run_convert(args) -> int:
    import json

    from ..policy.oci import export_oci
    from ..policy.printer import format_policy

    warnings: list[str] = []
    policy = _load(args, warnings)
    if args.to == "spo":
        text = _to_spo(args, policy, warnings)
    elif args.to == "oci":
        text = json.dumps(export_oci(policy, warn=warnings.append), indent=2) + "\n"
    elif args.to == "systemd":
        from ..policy.systemd import format_systemd

        text = format_systemd(policy, header=f"converted from {args.file} by sysgate policy convert")
    else:
        text = format_policy(policy, header=f"converted from {args.file} by sysgate policy convert")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output:
        from ..files import write_file

        write_file(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _to_spo(args, policy, warnings: list[str]) -> str:
    import os

    from ..errors import SysgateError
    from ..policy.spo import export_spo, listener_problem, resource_name

    if args.strict and listener_problem(policy):
        raise SysgateError(f"{args.file}: {listener_problem(policy)}")
    name = args.name
    if name is None and args.file != "-":
        name = resource_name(os.path.splitext(os.path.basename(args.file))[0])
    return export_spo(policy, name=name, namespace=args.namespace, warn=warnings.append,
                      header=f"converted from {args.file} by sysgate policy convert")


def run_groups(args) -> int:
    import textwrap

    from ..policy.groups import GROUPS, SYSTEMD_PREFIX, expand_group, systemd_table

    if args.names:
        for name in args.names:
            members = expand_group(name)
            key = name if name.startswith("@") else "@" + name
            print(f"{key} ({len(members)} syscalls):")
            print(textwrap.fill(" ".join(members), width=100, initial_indent="  ", subsequent_indent="  "))
        return 0
    table = {**GROUPS, **{SYSTEMD_PREFIX + k[1:]: v["members"] for k, v in systemd_table().items()}}
    width = max(len(n) for n in table)
    for name, direct in table.items():
        members = expand_group(name)
        line = f"{name:<{width}}  {len(members):>3}  {' '.join(direct)}"
        print(line if len(line) <= 110 else line[:107] + "...")
    return 0
