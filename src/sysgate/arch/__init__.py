"""Facts per architecture: the architecture table (:mod:`.table`), syscall numbers and signatures
(:mod:`.syscalls`)."""
