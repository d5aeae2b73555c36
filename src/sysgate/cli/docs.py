"""``sysgate policy docs``: the policy language reference and the example policies, shipped
inside the package (``sysgate/docs/examples``, a copy of the source tree's ``examples/``
that a test keeps equal), so an installed sysgate can show them without the sources."""
from __future__ import annotations

from ..errors import SysgateError

REFERENCE = "README.md"


def register_policy_docs(psub) -> None:
    """Add ``docs`` to the ``sysgate policy`` actions."""
    p = psub.add_parser("docs", help="print the policy language reference or a shipped example",
                        description="Print the policy language reference (the default), or the shipped "
                                    "example NAME (e.g. deny-list.policy, oci/agent.json); --list names them.")
    p.add_argument("name", nargs="?", help="an example to print (default: the language reference)")
    p.add_argument("--list", action="store_true", help="list the shipped examples")
    p.set_defaults(func=run)


def examples_dir():
    """The shipped examples directory (an importlib.resources Traversable)."""
    from importlib import resources

    return resources.files("sysgate").joinpath("docs", "examples")


def shipped(root=None, prefix: str = "") -> list[str]:
    """Every shipped file, as paths relative to the examples directory, sorted."""
    root = examples_dir() if root is None else root
    out = []
    for item in root.iterdir():
        if item.is_dir():
            if item.name != "__pycache__":
                out += shipped(item, f"{prefix}{item.name}/")
        else:
            out.append(prefix + item.name)
    return sorted(out)


def run(args) -> int:
    names = shipped()
    if args.list:
        print("\n".join(n for n in names if n != REFERENCE))
        return 0
    name = args.name or REFERENCE
    if name not in names:
        raise SysgateError(f"no shipped example {name!r} (sysgate policy docs --list names them)")
    print(examples_dir().joinpath(*name.split("/")).read_text(encoding="utf-8"), end="")
    return 0
