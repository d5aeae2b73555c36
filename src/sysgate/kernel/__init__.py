"""Direct access to the kernel's seccomp ABI (constants, syscalls, listener ioctls)."""
