"""sysgate.agent: the OCI seccomp agent for runc and crun (``sysgate agent``).

:mod:`.protocol` reads the runtime's container process state and listener fd,
:mod:`.config` chooses handlers from listenerMetadata and the config file,
:mod:`.handlers` holds the minimal built-in handlers, :mod:`.server` runs it all
on a :class:`~sysgate.supervisor.loop.Supervisor`.
"""
