"""A running guest: backends (QEMU, libvirt), the console, QMP, the SSH channel, the
heartbeat, run directories and their reaper, and the session that boots and tears down."""
