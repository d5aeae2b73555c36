"""sysgate: seccomp policies, a BPF compiler, a launcher and a user-notification supervisor.

The names in ``__all__`` are the Python API; everything else lives in the subpackages::

    import sysgate

    policy = sysgate.load_text("default: allow\\ngetppid: notify(fake)\\n")
    with sysgate.Supervisor(default=sysgate.Reply.errno("EPERM")) as sup:
        sup.use_policy(policy, {"fake": lambda n: sysgate.Reply.value(1)})
        target = sysgate.spawn(["/bin/sh", "-c", "echo $PPID"], sysgate.compile_policy(policy))
        sup.add_target(target)
        sup.run_until_idle()

The names load on first use (module ``__getattr__``), so ``import sysgate`` (also the first step
of every ``sysgate`` command) imports no submodule.
"""
__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "load_policy": "sysgate.policy_loader",
    "load_text": "sysgate.policy_loader",
    "compile_policy": "sysgate.compiler",
    "Program": "sysgate.compiler.program",
    "Filter": "sysgate.process.filter",
    "spawn": "sysgate.process.launch",
    "Target": "sysgate.process.launch",
    "install": "sysgate.process.install",
    "AttachedTarget": "sysgate.attach.target",
    "Supervisor": "sysgate.supervisor.loop",
    "Reply": "sysgate.supervisor.notification",
    "Notification": "sysgate.supervisor.notification",
    "TargetGone": "sysgate.supervisor.notification",
    "HandlerFunction": "sysgate.supervisor.contract",
    "HandlerObject": "sysgate.supervisor.contract",
    "SysgateError": "sysgate.errors",
}
#: public names that differ from the defining module's name for the object
_RENAMED = {
    # ``sysgate.attach`` is the subpackage (set as an attribute whenever it is imported),
    # so the function cannot also be called ``attach`` here.
    "attach_process": ("sysgate.attach.target", "attach"),
}

__all__ = [*_EXPORTS, *_RENAMED]

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: importing typing would double `import sysgate`'s time
if TYPE_CHECKING:   # what type checkers see (``X as X``: an explicit re-export); __getattr__ loads them at run time
    from .attach import target as _attach_target
    from .attach.target import AttachedTarget as AttachedTarget
    from .compiler import compile_policy as compile_policy
    from .compiler.program import Program as Program
    from .errors import SysgateError as SysgateError
    from .policy_loader import load_policy as load_policy, load_text as load_text
    from .process.filter import Filter as Filter
    from .process.install import install as install
    from .process.launch import Target as Target, spawn as spawn
    from .supervisor.contract import HandlerFunction as HandlerFunction, HandlerObject as HandlerObject
    from .supervisor.loop import Supervisor as Supervisor
    from .supervisor.notification import Notification as Notification, Reply as Reply, TargetGone as TargetGone

    attach_process = _attach_target.attach


def __getattr__(name: str):
    """Import the module defining the public ``name`` on first use and cache the object."""
    if name in _EXPORTS:
        module, attr = _EXPORTS[name], name
    elif name in _RENAMED:
        module, attr = _RENAMED[name]
    else:
        raise AttributeError(f"module 'sysgate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
