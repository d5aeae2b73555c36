"""sysgate.runtime: ``sysgate-runc``, an OCI runtime wrapper that connects containers to ``sysgate agent``.

Docker, containerd and Kubernetes (RuntimeClass) choose an OCI runtime by path but do not pass
``linux.seccomp.listenerPath`` through (Docker 20.10 drops it from the profile). The wrapper
sits where runc would: :mod:`.argv` finds the subcommand and bundle in runc's command line
without reordering it, :mod:`.bundle` adds ``listenerPath``/``listenerMetadata`` (or a platform
default profile) to the bundle's ``config.json``, and :mod:`.wrapper` then execs the real runtime
with the command line untouched.
"""
