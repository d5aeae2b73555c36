"""sysgate: seccomp policies, a BPF compiler, a launcher and a user-notification supervisor."""
__version__ = "0.1.0"
