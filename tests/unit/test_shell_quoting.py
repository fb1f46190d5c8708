"""Values from scenarios, modules, kernels and the environment reach guest and host shells as
data, never as code (docs/security.md).

Each command runs for real in bash on this host, as the guest's sshd runs it (``LocalGuest``),
with a hostile value: spaces, both quotes, ``;``, ``$( )``, backquotes, a backslash, a newline
and a glob. Had any of it run as shell, ``$PWN`` would exist. The tools such a command calls
are fakes on PATH that record the argv they got, so each test also shows the value arrived
whole, as one argument.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from livepatch_lab.core.settings import Settings, Timeouts
from livepatch_lab.lab.scenario import hookcmd
from livepatch_lab.lab.run import livepatch
from livepatch_lab.lab.run.forensics import HangEvidence
from livepatch_lab.lab.selftests import suite
from livepatch_lab.lab.scenario.specs import ServiceSpec
from livepatch_lab.lab.run.workload import detached, service
from livepatch_lab.machine.backends.qemu.command import incoming_uri, migrate_uri
from livepatch_lab.machine.channel import Result
from livepatch_lab.supply import buildroot

from .fakes.local_guest import LocalGuest

# no "/": it is also used as a file name
HOSTILE = "a b'c\"d;touch $PWN;$(touch $PWN)`touch $PWN`\\\nz*"
TIMEOUTS = dataclasses.replace(Timeouts(), command=10.0)


class Shell:
    """This host as the guest, with fake ``tools`` on PATH that record their argv."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.pwned, self.calls = tmp_path / "pwned", tmp_path / "calls"
        self.bin = tmp_path / "bin"
        self.calls.mkdir()
        self.bin.mkdir()
        monkeypatch.setenv("PWN", str(self.pwned))
        monkeypatch.setenv("CALLS", str(self.calls))
        monkeypatch.setenv("PATH", f"{self.bin}:{os.environ['PATH']}")
        self.guest = LocalGuest(TIMEOUTS)

    def fake(self, *tools: str) -> None:
        for tool in tools:
            path = self.bin / tool
            path.write_text('#!/bin/bash\nprintf "%s\\0" "${0##*/}" "$@" >"$CALLS/$(date +%s%N).$$"\n')
            path.chmod(0o755)

    def argv(self, tool: str) -> list[list[str]]:
        """Each call of ``tool``, in order: its arguments."""
        calls = [f.read_text().split("\0")[:-1] for f in sorted(self.calls.iterdir())]
        return [c[1:] for c in calls if c[0] == tool]


@pytest.fixture
def sh(tmp_path, monkeypatch) -> Shell:
    return Shell(tmp_path, monkeypatch)


@pytest.fixture
def sysfs(tmp_path, monkeypatch) -> Path:
    """A pretend /sys/kernel/livepatch holding a patch called HOSTILE, and a pretend /proc/modules."""
    d = tmp_path / "livepatch"
    (d / HOSTILE).mkdir(parents=True)
    (d / HOSTILE / "enabled").write_text("1\n")
    (d / HOSTILE / "transition").write_text("0\n")
    (tmp_path / "modules").write_text("lab_good 16384 0 - Live 0xffffffffc0a00000 (OEK)\n"
                                      "lab_good2 16384 0 - Live 0xffffffffc0a10000 (OEK)\n")
    monkeypatch.setattr(livepatch, "SYSFS", str(d))
    monkeypatch.setattr(livepatch, "PROC_MODULES", str(tmp_path / "modules"))
    return d / HOSTILE


# guest commands ------------------------------------------------------------------------------
def test_a_module_name_reaches_rmmod_whole_and_its_sysfs_entry_is_found(sh, sysfs):
    sh.fake("rmmod")
    removal = livepatch.remove(sh.guest, HOSTILE, 10)
    assert sh.argv("rmmod") == [[HOSTILE]]
    assert (removal.sysfs_gone, removal.module_gone) == (False, True)   # listed; not in /proc/modules
    assert not sh.pwned.exists()


def test_a_loaded_module_is_looked_up_by_its_exact_name_never_as_a_pattern(sh, sysfs):
    assert livepatch.module_loaded(sh.guest, "lab_good", 10)
    assert livepatch.module_loaded(sh.guest, "lab_good2", 10)
    assert not livepatch.module_loaded(sh.guest, "lab_goo", 10)    # a prefix is another module
    assert not livepatch.module_loaded(sh.guest, "lab.good", 10)   # a regex would have matched
    assert not livepatch.module_loaded(sh.guest, HOSTILE, 10)
    assert not livepatch.remove(sh.guest, "lab_good", 10, rmmod=False).module_gone
    assert not sh.pwned.exists()


def test_a_patch_name_is_a_path_in_sysfs_for_every_operation_on_it(sh, sysfs):
    assert livepatch.state(sh.guest, HOSTILE, 10) == {"enabled": 1, "transition": 0}
    assert livepatch.wait_transition(sh.guest, HOSTILE, 2)[0]
    assert not livepatch.signal_stragglers(sh.guest, HOSTILE, 10)   # no such attribute since 5.x
    (sysfs / "signal").write_text("")
    assert livepatch.signal_stragglers(sh.guest, HOSTILE, 10) and (sysfs / "signal").read_text() == "1\n"
    assert livepatch.force(sh.guest, HOSTILE, 10).ok and (sysfs / "force").read_text() == "1\n"
    assert livepatch.disable(sh.guest, HOSTILE, 10).ok and (sysfs / "enabled").read_text() == "0\n"
    assert not sh.pwned.exists()


def test_a_module_path_and_its_parameters_reach_insmod_one_argument_each(sh, sysfs):
    sh.fake("insmod")
    ko = f"/run/lab/modules/{HOSTILE}.ko"
    livepatch.load(sh.guest, ko, 10, report_text_of=HOSTILE, params=[("msg", HOSTILE), ("n", "1 2")])
    assert sh.argv("insmod") == [[ko, f"msg={HOSTILE}", "n=1 2"]]
    assert not sh.pwned.exists()


def test_a_hooks_placeholders_reach_its_command_as_one_argument_each(sh):
    sh.fake("agent")
    ko = f"/run/lab/modules/{HOSTILE}.ko"
    assert sh.guest.run(hookcmd.render("agent load {module} --name {name}", ko, HOSTILE)).ok
    assert sh.argv("agent") == [["load", ko, "--name", HOSTILE]]
    assert not sh.pwned.exists()


def test_serve_file_reaches_the_service_as_the_value_of_its_variable(sh, tmp_path, monkeypatch):
    monkeypatch.setattr(detached, "GUEST_DIR", str(tmp_path / "run"))
    got = tmp_path / "got"
    spec = ServiceSpec(command=f'printf %s "$LAB_SERVE_FILE" >{shlex.quote(str(got))}', serve_file=HOSTILE)
    sh.guest.run(service.start_script(spec), check=True)
    rc = shlex.quote(detached.path("service.rc"))   # the command ended
    sh.guest.run(f"until [ -e {rc} ]; do sleep 0.05; done", 10, check=True)
    assert got.read_text() == HOSTILE
    assert not sh.pwned.exists()


def test_hang_evidence_reads_a_modules_text_address_from_its_sysfs_path(sh, monkeypatch):
    sh.fake("cat", "objdump")
    evidence = HangEvidence(sh.guest, Settings(), 10)
    evidence.map = SimpleNamespace()   # anything: the module's address is read first
    evidence.add_module(HOSTILE, Path("/nonexistent.ko"))
    assert sh.argv("cat") == [[f"/sys/module/{HOSTILE}/sections/.text"]]
    assert not sh.pwned.exists()


def test_the_selftests_modules_go_under_the_kernels_release(sh, tmp_path):
    sent: list[str] = []

    class Recording(LocalGuest):   # keeps what it is asked to run, for the fakes below
        def run(self, command, timeout=None, *, check=False, stdin=None):
            sent.append(command)
            return Result(command, 0, "", "", 0.0)

    (tmp_path / "tree").mkdir()
    (tmp_path / "modules.tar.gz").write_bytes(b"")
    staged = SimpleNamespace(tree=tmp_path / "tree", modules_tar=tmp_path / "modules.tar.gz",
                             modules={"test_klp_livepatch": Path("x.ko")})
    suite.install(Recording(TIMEOUTS), SimpleNamespace(release=HOSTILE), staged, tmp_path)
    sh.fake("modprobe", "mkdir", "mount", "tar")
    assert sh.guest.run(sent[-1]).ok
    assert sh.argv("tar") == [["-xzf", "-", "-C", f"/lib/modules/{HOSTILE}"]]
    assert not sh.pwned.exists()


# host commands -------------------------------------------------------------------------------
def test_qemus_exec_migration_commands_read_and_write_the_state_file_named(sh, tmp_path):
    # QEMU runs an exec: URI's command with /bin/sh -c
    state = tmp_path / HOSTILE / "state"
    state.parent.mkdir()
    save = subprocess.run(["/bin/sh", "-c", migrate_uri(state).removeprefix("exec:")], input=b"RAM",
                          timeout=10)
    assert save.returncode == 0 and state.read_bytes() == b"RAM"
    restore = subprocess.run(["/bin/sh", "-c", incoming_uri(state).removeprefix("exec:")],
                             capture_output=True, timeout=10)
    assert restore.stdout == b"RAM"
    assert not sh.pwned.exists()


def test_a_build_roots_script_binds_and_runs_paths_and_arguments_as_given(sh):
    sh.fake("mount", "mkdir", "chroot")
    root, tree = Path(f"/cache/toolchains/{HOSTILE}/root"), Path(f"/cache/modules/{HOSTILE}")
    script = buildroot.chroot_script(root, [(tree, False)], ["make", f"M={tree}/src"])
    assert subprocess.run(["sh", "-c", script], timeout=10).returncode == 0
    inside = f"{root}{tree}"
    assert sh.argv("mount")[2:] == [["--bind", str(tree), inside], ["-o", "remount,bind,ro", inside]]
    assert sh.argv("chroot")[0][0] == str(root)
    assert sh.argv("chroot")[0][-2:] == ["make", f"M={tree}/src"]
    assert not sh.pwned.exists()
