"""sysgate.agent: the OCI seccomp agent for runc and crun (``sysgate agent``).

:mod:`.protocol` reads the runtime's container process state and listener fd,
:mod:`.config` chooses handlers from listenerMetadata and the config file,
:mod:`.container_handlers` builds a container's handlers from the agent entries (``mkdir-emulate``,
``mount-deny``…, :mod:`sysgate.handlers.seccompagent`) of :mod:`sysgate.handlers.registry`,
:mod:`.server` runs it all on a
:class:`~sysgate.supervisor.loop.Supervisor`.
"""
