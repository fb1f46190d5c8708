#!/usr/bin/env python3
"""A stand-in for qemu-system-x86_64: just enough process behaviour for QemuMachine.

It reads the command line QemuMachine builds, writes a few console lines to
the ``-chardev file,...,path=`` file, serves a minimal QMP on the
``-qmp unix:PATH,server=on,wait=off`` socket (greeting, ``qmp_capabilities``,
``query-status``, ``quit`` -> reply, SHUTDOWN event, exit 0) and otherwise
idles like a running guest. It saves a "guest" (``stop``, ``migrate`` to
``exec:cat > PATH`` writes ``SAVED_STATE`` there, ``query-migrate``, ``cont``)
and resumes one (``-incoming exec:cat PATH``: "inmigrate" for a moment, then
paused, or exit 1 if PATH does not hold ``SAVED_STATE``).
``FAKE_QEMU_MODE`` picks a misbehaviour:

  normal          as above
  ignore-quit     answers ``quit`` but keeps running (a wedged QEMU): needs SIGTERM
  ignore-term     as ignore-quit, and ignores SIGTERM too: needs SIGKILL
  port-in-use     exits at once, as QEMU does when a host forward's port is taken
  exit-at-start   exits at once with another error
  no-qmp          runs, but never creates the QMP socket

and how the machine ends, shortly after QMP is negotiated:

  poweroff        the guest powers itself off (SHUTDOWN guest-shutdown, exit 0)
  reset           the guest panics with panic=-1 and resets: -no-reboot ends QEMU
                  (SHUTDOWN guest-reset, exit 0)
  pvpanic         the guest panics through pvpanic (GUEST_PANICKED, SHUTDOWN guest-panic)
  segfault        QEMU itself dies of SIGSEGV (no event)
  abort           QEMU itself aborts (SIGABRT, no event)
  error-exit      QEMU exits with status 1 on an error (no event)

In every mode but ignore-term, SIGTERM is handled as QEMU does: a SHUTDOWN
event with cause host-signal, then exit 0.

Only the standard library: it runs under whatever python3 is on PATH.
"""
import json
import os
import resource
import signal
import socket
import sys
import time


def option(argv, name):
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def suboption(value, key):
    for part in value.split(","):
        if part.startswith(key + "="):
            return part[len(key) + 1:]
    return None


def send(conn, msg):
    conn.sendall(json.dumps(msg).encode() + b"\r\n")


def shutdown_event(reason):
    now = time.time()
    return {"event": "SHUTDOWN", "data": {"guest": reason != "host-qmp-quit", "reason": reason},
            "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)}}


CONNECTED = []   # the QMP connection, for the SIGTERM handler
SAVED_STATE = b"fake QEMU saved state\n"
INCOMING = []    # (path, when QEMU started) of the state to resume, if any
STATUS = ["running"]
GUEST_ACTS = ("poweroff", "reset", "pvpanic", "segfault", "abort", "error-exit")


def on_sigterm(signum, frame):
    for conn in CONNECTED:
        try:
            send(conn, shutdown_event("host-signal"))
        except OSError:
            pass
    sys.stderr.write("qemu-system-x86_64: terminating on signal 15\n")
    os._exit(0)


def main(argv):
    mode = os.environ.get("FAKE_QEMU_MODE", "normal")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # a deliberate crash leaves no core file
    qmp = option(argv, "-qmp")
    chardev = option(argv, "-chardev")
    netdev = option(argv, "-netdev") or ""
    prog = "qemu-system-x86_64"

    if mode == "port-in-use":
        fwd = next((p for p in netdev.split(",") if p.startswith("hostfwd=")), "hostfwd=tcp::2222-:22")
        sys.stderr.write(f"{prog}: -netdev {netdev}: Could not set up host forwarding rule "
                         f"'{fwd[len('hostfwd='):]}'\n")
        return 1
    if mode == "exit-at-start":
        sys.stderr.write(f"{prog}: -drive file=/nonexistent.qcow2: Could not open '/nonexistent.qcow2': "
                         "No such file or directory\n")
        return 1
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif mode != "ignore-quit":   # ignore-quit: a wedged QEMU, that SIGTERM kills outright
        signal.signal(signal.SIGTERM, on_sigterm)

    incoming = option(argv, "-incoming")
    if incoming is not None:
        assert incoming.startswith("exec:cat "), incoming
        INCOMING[:] = [(incoming[len("exec:cat "):].strip("'"), time.monotonic())]
    console_path = suboption(chardev, "path")
    with open(console_path, "ab", buffering=0) as console:
        console.write(b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n")
        console.write(b"Booting from ROM..\r\n")
        console.write(b"[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) "
                      b"#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\r\n")
        console.write(b"[    0.000000] Command line: " + (option(argv, "-append") or "").encode() + b"\r\n")

        if mode == "no-qmp":
            while True:   # idles until a signal ends it (SIGTERM's handler, or SIGKILL)
                signal.pause()

        assert qmp.startswith("unix:") and ",server=on" in qmp and ",wait=off" in qmp, qmp
        path = qmp[len("unix:"):].split(",")[0]
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        sys.stderr.write(f"{prog}: fake QEMU up, QMP on {path}\n")
        sys.stderr.flush()
        while True:
            conn, _ = listener.accept()
            CONNECTED[:] = [conn]
            if serve(conn, mode, console) == "exit":
                return 0


def guest_acts(mode, conn, console):
    """The machine ends as ``mode`` says; returns only if QEMU exits normally."""
    if mode == "poweroff":
        console.write(b"[    3.210000] reboot: Power down\r\n")
        send(conn, shutdown_event("guest-shutdown"))
    elif mode == "reset":
        console.write(b"[    3.210000] Kernel panic - not syncing: sysrq triggered crash\r\n")
        console.write(b"[    3.220000] Rebooting in 1 seconds..\r\n")
        send(conn, shutdown_event("guest-reset"))
    elif mode == "pvpanic":
        console.write(b"[    3.210000] Kernel panic - not syncing: sysrq triggered crash\r\n")
        send(conn, {"event": "GUEST_PANICKED", "data": {"action": "pause"}})
        send(conn, shutdown_event("guest-panic"))
    elif mode == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "abort":
        os.abort()
    elif mode == "error-exit":
        sys.stderr.write("qemu-system-x86_64: virtio: bogus descriptor or out of resources\n")
        sys.stderr.flush()
        os._exit(1)


def status():
    """The run state; an incoming state is "read" 0.1 s after the start, then checked."""
    if INCOMING:
        path, started = INCOMING[0]
        if time.monotonic() - started < 0.1:
            return "inmigrate"
        with open(path, "rb") as f:
            if f.read() != SAVED_STATE:
                sys.stderr.write("qemu-system-x86_64: load of migration failed: Invalid argument\n")
                sys.stderr.flush()
                os._exit(1)
        INCOMING.clear()
        STATUS[0] = "paused"   # as the saved guest was: it was stopped to be saved
    return STATUS[0]


def serve(conn, mode, console):
    send(conn, {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                        "capabilities": ["oob"]}})
    buf = b""
    conn.settimeout(0.2 if mode in GUEST_ACTS else None)
    while True:
        try:
            chunk = conn.recv(4096)
        except socket.timeout:   # the machine ends by itself
            guest_acts(mode, conn, console)
            return "exit"
        if not chunk:
            return "closed"
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            cmd, msg_id = msg.get("execute"), msg.get("id")
            if cmd == "qmp_capabilities":
                send(conn, {"return": {}, "id": msg_id})
            elif cmd == "query-status":
                send(conn, {"return": {"status": status(), "running": status() == "running"},
                            "id": msg_id})
            elif cmd in ("stop", "cont", "migrate-set-parameters"):
                STATUS[0] = {"stop": "paused", "cont": "running"}.get(cmd, STATUS[0])
                send(conn, {"return": {}, "id": msg_id})
            elif cmd == "migrate":
                uri = msg["arguments"]["uri"]
                assert uri.startswith("exec:cat > "), uri
                with open(uri[len("exec:cat > "):].strip("'"), "wb") as f:
                    f.write(SAVED_STATE)
                STATUS[0] = "postmigrate"
                send(conn, {"return": {}, "id": msg_id})
            elif cmd == "query-migrate":
                send(conn, {"return": {"status": "completed"}, "id": msg_id})
            elif cmd == "quit":
                send(conn, {"return": {}, "id": msg_id})
                if mode in ("ignore-quit", "ignore-term"):
                    continue
                send(conn, shutdown_event("host-qmp-quit"))
                return "exit"
            else:
                send(conn, {"error": {"class": "CommandNotFound",
                                      "desc": f"The command {cmd} has not been found"}, "id": msg_id})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
