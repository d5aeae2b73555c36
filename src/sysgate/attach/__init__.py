"""Filtering a running process: ptrace primitives (:mod:`.ptrace`), running code in a stopped
thread (:mod:`.inject`), and installing a filter in another process (:mod:`.target`)."""
