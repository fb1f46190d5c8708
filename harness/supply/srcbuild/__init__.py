"""Livepatch modules built from a kernel source diff: the diff checked, the kernel's exact
source and debug vmlinux fetched, the builder (kpatch-build) made in a build root of the
kernel's suite and compiler, the original build made once per kernel version, and each
diff built on top of it."""
