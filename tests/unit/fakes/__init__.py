"""Stand-ins for the lab's peers (QEMU, QMP, an SSH server) used by the unit tests."""
