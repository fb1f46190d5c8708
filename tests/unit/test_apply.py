"""Appliers: a vendor's tool or a command hook, run detached in the guest while the lab watches
the kernel, heard out and recorded; the templates of a hook.

The tool's guest-side scripts run for real on this host (``LocalGuest``: bash, as the guest's
sshd runs them) against a pretend /sys: ``kernel/`` stands for /sys/kernel/livepatch and
``module/`` for /sys/module. The pretend tools are shell scripts that act on it as kpatch does.
"""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from livepatch_lab.core.errors import LivepatchError
from livepatch_lab.core.settings import Timeouts
from livepatch_lab.lab.run import apply, livepatch
from livepatch_lab.lab.scenario import hookcmd
from livepatch_lab.lab.run.events import Timeline
from livepatch_lab.lab.run.record import Revert, RunRecord
from livepatch_lab.lab.scenario.specs import ApplySpec
from livepatch_lab.lab.run.workload import detached

from .fakes.local_guest import LocalGuest

TIMEOUTS = dataclasses.replace(Timeouts(), command=10.0, service_stop=1.0, apply_tool=4.0)

# A pretend kpatch: `load X.ko` lists the patch (init done, transition under way), then waits
# for the test to end the transition (it writes 0 into `transition`), as `kpatch load` waits;
# if `giveup` exists it gives up instead, removes the patch and fails. `unload X` disables
# (or fails, if `busy` exists), waits for the test to end the unpatching, and removes the patch.
TOOL = r"""
set -u
sys=$SYS; mods=$MODS
case $1 in
load)
    n=$(basename "$2" .ko)
    echo "loading patch module: $2"
    [ -e "$sys/refuse" ] && { echo "insmod: ERROR: could not insert module $2: Invalid parameters" >&2; exit 1; }
    mkdir -p "$sys/$n" "$mods/$n/sections"
    echo 1 >"$sys/$n/enabled"; echo 1 >"$sys/$n/transition"
    echo 0xffffffffc0de0000 >"$mods/$n/sections/.text"; echo live >"$mods/$n/initstate"
    [ -e "$sys/hang" ] && exec sleep 60
    while [ "$(cat "$sys/$n/transition")" = 1 ]; do
        if [ -e "$sys/giveup" ]; then
            echo "module $n did not complete its transition, unloading..."
            rm -rf "${sys:?}/$n" "${mods:?}/$n"
            echo "kpatch: error: failed to load module $n (transition stalled)" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "transition complete (0 seconds)"
    ;;
unload)
    n=$2
    echo "disabling patch module: $n"
    [ -e "$sys/busy" ] && { echo "sh: echo: write error: Device or resource busy" >&2; exit 1; }
    echo 0 >"$sys/$n/enabled"; echo 1 >"$sys/$n/transition"
    while [ "$(cat "$sys/$n/transition")" = 1 ]; do sleep 0.1; done
    echo "unloading patch module: $n"
    rm -rf "${sys:?}/$n" "${mods:?}/$n"
    ;;
esac
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    """(ctx, tool, sysfs dir): a run context on this host, and a Tool that is the pretend kpatch."""
    sys_dir, mods = tmp_path / "kernel", tmp_path / "module"
    sys_dir.mkdir()
    mods.mkdir()
    script = tmp_path / "fake-kpatch"
    script.write_text("#!/bin/bash\n" + TOOL)
    script.chmod(0o755)
    monkeypatch.setattr(livepatch, "SYSFS", str(sys_dir))
    monkeypatch.setattr(apply, "MODULES", str(mods))
    monkeypatch.setattr(detached, "GUEST_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("SYS", str(sys_dir))
    monkeypatch.setenv("MODS", str(mods))
    rec = RunRecord(patch_name="lab_good")
    # the kernel's real livepatch interface on the pretend sysfs, a module listed where the tool put it
    kernel = SimpleNamespace(**{n: getattr(livepatch, n) for n in dir(livepatch) if not n.startswith("_")})
    kernel.module_loaded = lambda g, name, t: (mods / name).exists()
    ctx = SimpleNamespace(guest=LocalGuest(TIMEOUTS), timeouts=TIMEOUTS, rec=rec, events=Timeline(rec),
                          loaded=[], params={}, remote=lambda name: f"/run/lab/modules/{name}.ko", kernel=kernel)
    tool = apply.Tool("kpatch", f"{script} load {{module}}", f"{script} unload {{name}}")
    return ctx, tool, sys_dir


def finish_transition(sys_dir: Path, name: str = "lab_good") -> None:
    (sys_dir / name / "transition").write_text("0\n")


def events(ctx) -> list[tuple[str, dict]]:
    return [(e["event"], {k: v for k, v in e.items() if k not in ("t", "event")}) for e in ctx.events.events]


# loading ------------------------------------------------------------------------------------
def test_a_load_returns_once_the_kernel_lists_the_patch_and_the_tool_is_heard_out_later(world):
    ctx, tool, sys_dir = world
    loaded = tool.load(ctx, "lab_good")
    # the tool still waits for the transition, as kpatch does: the step has what it needs
    assert loaded.ok and loaded.stdout.strip() == "0xffffffffc0de0000"
    assert 0 <= loaded.seconds < 5
    assert ("load", "lab_good") in tool.calls and ctx.rec.tool_runs == []
    finish_transition(sys_dir)
    said = tool.settle(ctx, "lab_good")
    assert (said.rc, said.kernel, said.said) == (0, "patched", "transition complete (0 seconds)")
    assert said.seconds is not None and 0 <= said.seconds < 5
    assert ctx.rec.patch("lab_good").transition.tool is said
    run, = ctx.rec.tool_runs
    assert run.command.endswith("load /run/lab/modules/lab_good.ko") and "loading patch module" in run.output
    assert [e for e, _ in events(ctx)] == ["tool-started", "tool-ended"]
    assert tool.calls == {}


def test_a_tool_that_ends_without_loading_the_patch_failed_the_load_in_its_own_words(world):
    ctx, tool, sys_dir = world
    (sys_dir / "refuse").write_text("")
    with pytest.raises(LivepatchError) as err:
        tool.load(ctx, "lab_good")
    assert "kpatch load /run/lab/modules/lab_good.ko failed (rc 1)" in str(err.value)
    assert "could not insert module" in str(err.value)
    assert ctx.rec.tool_runs[0].rc == 1 and tool.calls == {}


def test_a_tool_that_gives_up_and_removes_the_patch_leaves_nothing_for_the_lab_to_unload(world):
    ctx, tool, sys_dir = world
    tool.load(ctx, "lab_good")
    ctx.loaded.append("lab_good")
    (sys_dir / "giveup").write_text("")
    said = tool.settle(ctx, "lab_good")
    assert (said.rc, said.kernel) == (1, "gone")
    assert said.said == "kpatch: error: failed to load module lab_good (transition stalled)"
    assert ctx.loaded == []
    assert ctx.rec.patch("lab_good").revert == Revert(disabled=True, by="kpatch load", sysfs_gone=True,
                                                      module_gone=True)


def test_a_tool_that_never_ends_is_killed_at_its_deadline(world):
    ctx, tool, sys_dir = world
    (sys_dir / "hang").write_text("")
    tool.load(ctx, "lab_good")
    said = tool.settle(ctx, "lab_good")
    assert said.rc is None and said.kernel == "in transition"
    assert detached.ended(ctx.guest, "tool-load-lab_good") is not None   # nothing of it runs on


# reverting ---------------------------------------------------------------------------------
def test_a_revert_returns_once_the_patch_reads_disabled_and_the_unload_hears_the_tool_out(world):
    ctx, tool, sys_dir = world
    tool.load(ctx, "lab_good")
    finish_transition(sys_dir)
    tool.settle(ctx, "lab_good")
    disabled = tool.disable(ctx, "lab_good")
    assert disabled.ok and (sys_dir / "lab_good" / "enabled").read_text().strip() == "0"
    finish_transition(sys_dir)     # the kernel completes the unpatching; the tool rmmods
    unloaded = tool.unload(ctx, "lab_good")
    assert unloaded.rc == 0 and unloaded.sysfs_gone and not (sys_dir / "lab_good").exists()
    said = ctx.rec.patch("lab_good").revert.tool
    assert said and (said.op, said.rc, said.said) == ("revert", 0, "unloading patch module: lab_good")
    assert [r.op for r in ctx.rec.tool_runs] == ["load", "revert"]


def test_a_revert_that_fails_before_disabling_says_so(world):
    ctx, tool, sys_dir = world
    tool.load(ctx, "lab_good")
    finish_transition(sys_dir)
    tool.settle(ctx, "lab_good")
    (sys_dir / "busy").write_text("")
    res = tool.disable(ctx, "lab_good")
    assert not res.ok
    assert res.stderr.startswith("kpatch revert failed (rc 1) without disabling the patch")
    assert "Device or resource busy" in res.stderr
    assert (sys_dir / "lab_good" / "enabled").read_text().strip() == "1"


def test_without_a_revert_hook_the_lab_reverts_the_patch_itself(world):
    ctx, _, _ = world
    done = []
    ctx.kernel.disable = lambda g, name, t: done.append(("disable", name))
    ctx.kernel.remove = lambda g, name, t, rmmod=True: done.append(("rmmod", name))
    hook = apply.applier(ApplySpec("command", "insmod {module}"))
    hook.disable(ctx, "lab_good")
    hook.unload(ctx, "lab_good")
    assert done == [("disable", "lab_good"), ("rmmod", "lab_good")]


def test_the_scenarios_apply_picks_the_applier():
    assert isinstance(apply.applier(ApplySpec()), apply.Insmod)
    kp = apply.applier(ApplySpec("kpatch"))
    assert (kp.name, kp.load_cmd, kp.revert_cmd) == ("kpatch", "kpatch load {module}", "kpatch unload {name}")
    hook = apply.applier(ApplySpec("command", "agent apply {module}", "agent revert {name}"))
    assert (hook.name, hook.load_cmd, hook.revert_cmd) == ("command hook", "agent apply {module}",
                                                           "agent revert {name}")


# hook templates -------------------------------------------------------------------------------
def test_placeholders_are_filled_in_shell_quoted():
    cmd = hookcmd.render("agent --apply {module} --as {name} && echo ${HOME} {name}",
                         "/run/lab/modules/it's.ko", "lab_good")
    assert cmd == ("agent --apply '/run/lab/modules/it'\"'\"'s.ko' --as lab_good && echo ${HOME} lab_good")


@pytest.mark.parametrize("template,problem", [
    ("agent {modul}", "unknown placeholder {modul}"),
    ("agent {}", "unknown placeholder {}"),
    ("agent '{module}'", "write {module} without quotes"),
    ('agent "{name}"', "write {name} without quotes"),
    ("   ", "must not be empty"),
])
def test_a_bad_template_is_refused_with_the_reason(template, problem):
    assert problem in hookcmd.check(template)


def test_a_good_template_passes():
    assert hookcmd.check(textwrap.dedent("""\
        for f in "${DIR}"/*; do echo "$f"; done
        agent load {module} --name {name}""")) is None
