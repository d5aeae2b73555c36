"""Classic BPF for seccomp: instruction model, assembler, disassembler, checker, emulator."""
