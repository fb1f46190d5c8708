"""A libvirt domain as the lab's machine, on this host or a remote one.

One code path serves ``qemu:///system`` and ``qemu+ssh://user@host/system``:

- kernel, initrd and disks go into a lab-owned ``dir`` storage pool through
  libvirt's volume API, named by content hash (a second run uploads nothing);
  the per-run overlay is a qcow2 volume backed by the base image's volume
  (``storage``);
- the domain is transient and auto-destroyed with our connection, so a lab
  process killed outright leaves no guest running (its overlay volume is
  reaped by the next run: ``LibvirtBackend.reap``);
- the serial console is a libvirt stream pumped into the local console file
  (the domain starts paused and resumes once the stream is attached: no
  byte is lost); the lab's ``ConsoleFollower`` tails that file as usual
  (``machine``);
- networking is QEMU user-mode with ``restrict=on`` and host forwards on the
  libvirt host's 127.0.0.1; for a remote host an ``ssh -N -L`` child brings
  each forward to the lab's own 127.0.0.1 (``tunnel``);
- how a domain ended comes from its lifecycle events and state (``lifecycle``).

The pure parts (``uri``, ``xmldefs``, ``errors``, ``lifecycle``, the tunnel's
command line) import nothing from libvirt and are unit-tested without it; only
``connection.bindings()`` imports the libvirt module, when a machine needs it.
"""
from __future__ import annotations

from .backend import LibvirtBackend
from .machine import LibvirtMachine

__all__ = ["LibvirtBackend", "LibvirtMachine"]
