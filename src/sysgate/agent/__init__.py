"""sysgate.agent: the OCI seccomp agent for runc and crun (``sysgate agent``).

:mod:`.protocol` reads the runtime's container process state and listener fd,
:mod:`.config` chooses handlers from listenerMetadata and the config file,
:mod:`.handlers` maps the agent's handler names (``mkdir-emulate``, ``mount-deny``…) onto
:class:`sysgate.handlers.container.ContainerHandler`, :mod:`.server` runs it all on a
:class:`~sysgate.supervisor.loop.Supervisor`.
"""
