"""The sandbox: a secure base under a policy's ``fs``/``net`` rules (:mod:`.base`), the
kernel facts it rests on (:mod:`.surface`) and the warnings for policies that route some
path or peer syscalls to a handler but leave others to the kernel (:mod:`.coverage`)."""
