"""Run a :class:`~sysgate.supervisor.Supervisor` inside an asyncio event loop.

The supervisor's epoll fd is itself pollable, so asyncio watches that one fd
(``add_reader``) and calls :meth:`Supervisor.run_once` with a zero timeout when it
is readable; a timer covers handler deadlines. Handlers still run synchronously
(or in the supervisor's worker pool): an async handler is not supported.
"""
from __future__ import annotations

import asyncio


async def serve(supervisor, *, until_idle: bool = False) -> None:
    """Serve ``supervisor`` on the running loop until it is stopped (or idle with ``until_idle``).

    Cancelling the task stops serving; listeners stay open (call ``supervisor.close()``).
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    timer = None

    def finished() -> bool:
        if supervisor.stopping or (until_idle and supervisor.idle):
            if not done.done():
                done.set_result(None)
            return True
        return False

    def step() -> None:
        nonlocal timer
        supervisor.run_once(0)
        if finished():
            return
        if timer is not None:
            timer.cancel()
        delay = supervisor.next_timeout()
        timer = None if delay is None else loop.call_later(delay, step)

    fd = supervisor.fileno()
    loop.add_reader(fd, step)
    try:
        loop.call_soon(step)  # backlog from add_target and an already idle supervisor
        await done
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
        supervisor.consume_stop()
