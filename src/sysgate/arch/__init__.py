"""Facts per architecture: syscall numbers and signatures (:mod:`.syscalls`)."""
