"""A real libvirtd for the libvirt backend's tests, and a throwaway sshd on loopback.

No systemd here (nor in CI containers): the daemons are started directly, once,
and left running for later sessions (they hold no lab state; stop them with
``pkill -x libvirtd; pkill -x virtlogd`` if unwanted).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from livepatch_lab.core.locks import file_lock
from tests.waiting import NotInTime, wait_until

URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
WRAPPER_SRC = REPO / "harness" / "machine" / "backends" / "qemu-tcg-single"


def _answers(uri: str = URI) -> bool:
    res = subprocess.run(["virsh", "-c", uri, "list"], capture_output=True, timeout=30)
    return res.returncode == 0


def _running(name: str) -> bool:
    """The daemon accepts connections on its socket. Neither the socket file nor the pidfile
    proves it: a machine restored from a snapshot keeps /run but not the processes, and a
    killed daemon lingers as a zombie until the container's init reaps it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        try:
            s.connect(f"/run/libvirt/{'libvirt' if name == 'libvirtd' else name}-sock")
            return True
        except OSError:
            return False


def _start(name: str, log: Path) -> None:
    # The daemon's own log file: the only place it says why it would not start.
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{log}")
    subprocess.run([name, "--daemon"], check=True, timeout=30, env=env)


def ensure_libvirtd(deadline_s: float = 60) -> None:
    """virtlogd + libvirtd running and answering on ``qemu:///system``."""
    from livepatch_lab.core.settings import DEFAULT_TCG_EMULATOR
    _kvm_group_access()
    _install_wrapper(Path(DEFAULT_TCG_EMULATOR))
    if _answers():
        return
    logs = {name: Path(f"/var/log/livepatch-lab-{name}.log") for name in ("virtlogd", "libvirtd")}
    # xdist workers get here together: one starts the daemons, the others find them running.
    with file_lock(Path("/run/livepatch-lab-libvirtd.lock"), timeout=deadline_s,
                   what="libvirtd start-up by another worker"):
        for name, log in logs.items():
            if not _running(name):
                _start(name, log)
    def why() -> str:
        tails = "\n".join(f"--- {log} ---\n" + _tail(log) for log in logs.values())
        running = {name: _running(name) for name in logs}
        return f"libvirtd to answer `virsh -c {URI} list` (running: {running})\n{tails}"
    wait_until(_answers, why, deadline_s, interval=0.5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def _kvm_group_access() -> None:
    """/dev/kvm as Debian's udev rule leaves it (root:kvm 0660). Root-only, libvirt probes
    QEMU with KVM as root but checks /dev/kvm as its QEMU user, finds its capability cache
    stale on every call and re-probes: ~4 s per call, ~1 min per domain start."""
    kvm = Path("/dev/kvm")
    if kvm.exists() and (kvm.stat().st_mode & 0o060) != 0o060:
        shutil.chown(kvm, group="kvm")
        kvm.chmod(0o660)


def _install_wrapper(dest: Path) -> None:
    if dest.exists() and dest.read_bytes() == WRAPPER_SRC.read_bytes():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WRAPPER_SRC, dest)
    dest.chmod(0o755)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding local
"""

# libvirt and the lab's tunnel both run the URI's `command`: this one keeps the
# throwaway host key out of root's known_hosts.
SSH_WRAPPER = """#!/bin/sh
exec ssh -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR "$@"
"""


def start_sshd(d: Path, deadline_s: float = 20) -> tuple[subprocess.Popen, str]:
    """An sshd on 127.0.0.1 with its own keys; returns it and a qemu+ssh URI through it."""
    for name in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True, timeout=30)
    shutil.copyfile(d / "id.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(SSHD_CONFIG.format(port=port, d=d))
    (d / "ssh").write_text(SSH_WRAPPER)
    (d / "ssh").chmod(0o755)
    Path("/run/sshd").mkdir(exist_ok=True)   # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"),
                             "-E", str(d / "sshd.log")], start_new_session=True)
    def state() -> str:
        if proc.poll() is not None:
            return "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return "listening"
        except OSError:
            return ""
    try:
        seen = wait_until(state, f"sshd to listen on 127.0.0.1:{port}", deadline_s, interval=0.1)
    except NotInTime:
        seen = "silent"
    if seen != "listening":
        proc.kill()
        raise RuntimeError(f"sshd did not listen ({seen}): {(d / 'sshd.log').read_text()}")
    uri = f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={d}/id&no_verify=1&command={d}/ssh"
    return proc, uri


def leftovers() -> dict[str, list[str]]:
    """The lab's libvirt traces: domains, per-run overlay volumes, QEMU processes, tunnels."""
    doms = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True,
                          text=True, timeout=30).stdout.split()
    vols = subprocess.run(["virsh", "-c", URI, "vol-list", "livepatch-lab"], capture_output=True,
                          text=True, timeout=30).stdout.split()
    procs = subprocess.run(["pgrep", "-af", "qemu-system|qemu-tcg-single|ExitOnForwardFailure"],
                           capture_output=True, text=True).stdout.splitlines()
    return {"domains": [d for d in doms if d.startswith("lab-")],
            "overlays": [v for v in vols if v.startswith("lab-")],
            "processes": [p for p in procs if "livepatch-lab/lab-" in p or "ExitOnForwardFailure" in p]}
