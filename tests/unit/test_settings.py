"""Settings: defaults < environment < explicit overrides; bad values name their source."""
import dataclasses
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import ENV_PREFIX, Settings, Timeouts

P = ENV_PREFIX


def test_every_environment_variable_is_read_and_typed(tmp_path):
    env = {P + "CACHE": str(tmp_path / "c"), P + "ACCEL": "tcg", P + "MEMORY_MIB": "2048",
           P + "CPUS": "4", P + "QEMU": "/opt/qemu/bin/qemu-system-x86_64",
           P + "MIRROR": "http://mirror.example/debian", P + "TCG_FACTOR": "2.5",
           P + "BOOT_PROTOCOL": "bzimage", P + "TCG_THREAD": "single"}
    s = Settings.from_env(env)
    assert (s.cache_dir, s.accel, s.memory_mib, s.cpus, s.qemu_binary, s.debian_mirror, s.tcg_factor,
            s.boot_protocol, s.tcg_thread) == (tmp_path / "c", "tcg", 2048, 4, "/opt/qemu/bin/qemu-system-x86_64",
                                               "http://mirror.example/debian", 2.5, "bzimage", "single")


def test_unset_and_empty_variables_leave_the_defaults(tmp_path):
    s = Settings.from_env({P + "ACCEL": "", P + "CPUS": "", "UNRELATED": "x"}, cache_dir=tmp_path)
    d = Settings(cache_dir=tmp_path)
    assert s == d
    assert (d.accel, d.cpus, d.memory_mib, d.boot_protocol, d.debian_mirror, d.tcg_thread) == \
        ("auto", 2, 1024, "pvh", None, "auto")


def test_explicit_overrides_beat_the_environment_and_none_means_not_given(tmp_path):
    env = {P + "CPUS": "4", P + "ACCEL": "kvm"}
    s = Settings.from_env(env, cache_dir=tmp_path, cpus=1, accel=None)
    assert (s.cpus, s.accel) == (1, "kvm")


@pytest.mark.parametrize("var, raw, kind", [
    ("MEMORY_MIB", "1G", "int"), ("CPUS", "two", "int"), ("MEMORY_MIB", "1.5", "int"),
    ("TCG_FACTOR", "fast", "float"), ("SNAPSHOTS", "maybe", "switch (1 or 0)"),
])
def test_an_unparsable_variable_is_named_with_its_value(var, raw, kind):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({P + var: raw})
    assert err.value.field == P + var
    assert err.value.source == "environment"
    assert P + var in str(err.value) and repr(raw) in str(err.value) and kind in str(err.value)


@pytest.mark.parametrize("var, raw", [("ACCEL", "xen"), ("BOOT_PROTOCOL", "multiboot"), ("CPUS", "0"),
                                      ("TCG_THREAD", "yes"),
                                      ("MEMORY_MIB", "-1"), ("TCG_FACTOR", "0"), ("TCG_FACTOR", "nan"),
                                      ("TCG_FACTOR", "inf")])
def test_a_parsable_but_invalid_variable_is_also_named(var, raw, tmp_path):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({P + var: raw}, cache_dir=tmp_path)
    assert err.value.field == P + var and err.value.source == "environment"
    assert P + var in str(err.value) and raw in str(err.value)


@pytest.mark.parametrize("raw, on", [("0", False), ("off", False), ("No", False), ("false", False),
                                     ("1", True), ("yes", True), ("ON", True), ("true", True)])
def test_snapshots_are_on_by_default_and_a_switch_turns_them_off(raw, on, tmp_path):
    assert Settings(cache_dir=tmp_path).snapshots is True
    assert Settings.from_env({P + "SNAPSHOTS": raw}, cache_dir=tmp_path).snapshots is on
    assert Settings.from_env({P + "SNAPSHOTS": raw}, cache_dir=tmp_path, snapshots=True).snapshots


def test_an_invalid_override_names_the_setting_not_a_variable(tmp_path):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({P + "ACCEL": "tcg"}, cache_dir=tmp_path, accel="xen")
    assert err.value.field == "accel"
    assert "xen" in str(err.value) and "auto, kvm, tcg" in str(err.value)


@pytest.mark.parametrize("field, value", [("accel", "hvf"), ("boot_protocol", "efi"), ("cpus", 0),
                                          ("tcg_thread", "both"),
                                          ("memory_mib", 0), ("tcg_factor", -1.0)])
def test_settings_refuse_invalid_values(field, value):
    with pytest.raises(ConfigError) as err:
        Settings(**{field: value})
    assert err.value.field == field


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().cpus = 8  # type: ignore[misc]


def test_a_relative_or_home_cache_dir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings.from_env({P + "CACHE": "rel/cache"}).cache_dir == tmp_path / "rel" / "cache"
    assert Settings.from_env({}, cache_dir="~/lab").cache_dir == tmp_path / "home" / "lab"


def test_the_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().cache_dir == tmp_path / "xdg" / "livepatch-lab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().cache_dir == tmp_path / "home" / ".cache" / "livepatch-lab"


def test_the_whole_cache_lives_below_cache_dir(tmp_path):
    s = Settings(cache_dir=tmp_path / "cache")
    parts = [s.kernels_dir, s.images_dir, s.downloads_dir, s.apt_dir, s.runs_dir, s.locks_dir,
             s.kernel_sources_dir]
    assert all(p.parent == s.cache_dir for p in parts)
    assert len({p.name for p in parts}) == len(parts)
    assert [p.name for p in parts] == ["kernels", "images", "downloads", "apt", "runs", "locks", "sources"]
    assert not (tmp_path / "cache").exists()   # naming the layout creates nothing


GUEST_SIDE = {"first_console", "boot", "ssh_connect", "command", "poweroff", "transition",
              "service_start", "service_stop", "probe_command", "heartbeat", "selftest_case", "resync",
              "apply_tool"}


def test_scaled_stretches_only_the_guest_side_deadlines():
    base = Timeouts()
    tcg = base.scaled(3.0)
    for f in dataclasses.fields(Timeouts):
        want = getattr(base, f.name) * (3.0 if f.name in GUEST_SIDE else 1.0)
        assert getattr(tcg, f.name) == pytest.approx(want), f.name
    assert set(Timeouts.SCALED) == GUEST_SIDE
    assert base == Timeouts()   # frozen: scaling makes a new object


def test_host_side_deadlines_are_never_scaled():
    tcg = Timeouts().scaled(10)
    for name in ("kvm_probe", "qmp", "kill", "host_command", "apt_update", "download", "image_build", "lock",
                 "snapshot"):
        assert getattr(tcg, name) == getattr(Timeouts(), name), name


def test_timeouts_for_the_accelerator_use_the_tcg_factor():
    s = Settings(tcg_factor=4.0, timeouts=Timeouts(boot=10.0, qmp=2.0))
    assert s.timeouts_for("kvm") is s.timeouts
    tcg = s.timeouts_for("tcg")
    assert (tcg.boot, tcg.qmp) == (40.0, 2.0)


def test_timeouts_is_not_a_dataclass_field_for_scaled_list():
    assert "SCALED" not in {f.name for f in dataclasses.fields(Timeouts)}
    assert isinstance(Settings().cache_dir, Path)


def test_qemu_is_lab_sh_s_own_where_it_installed_one_else_the_systems(tmp_path, monkeypatch):
    from livepatch_lab.core import settings as mod
    own = tmp_path / "qemu-system-x86_64"
    monkeypatch.setattr(mod, "LAB_QEMU", str(own))
    assert Settings(cache_dir=tmp_path).qemu_binary == "qemu-system-x86_64"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert Settings(cache_dir=tmp_path).qemu_binary == str(own)
    assert Settings.from_env({P + "QEMU": "/opt/q"}, cache_dir=tmp_path).qemu_binary == "/opt/q"
