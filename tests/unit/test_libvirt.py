"""The libvirt backend's pure parts: no libvirtd, no libvirt module needed."""
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError, InfraError, PortInUse
from livepatch_lab.core.settings import Settings
from livepatch_lab.machine.backends import libvirt
from livepatch_lab.machine.backends.base import Forward, MachineSpec
from livepatch_lab.machine.backends.libvirt import errors, storage, tunnel, uri, xmldefs

Q = "{%s}" % xmldefs.QEMU_NS


def _cfg(accel="tcg", emulator="", forwards=(Forward(40022, 22), Forward(40080, 8080)), **spec_kw):
    spec = MachineSpec(name="lab-x", kernel=Path("/local/vmlinux"), append="console=ttyS0 panic=-1",
                       console_log=Path("/tmp/c.log"), initrd=Path("/local/initrd"),
                       forwards=forwards, cpus=2, memory_mib=1024, **spec_kw)
    disks = (xmldefs.DomainDisk("/pool/lab-x-disk0.qcow2", "qcow2"),
             xmldefs.DomainDisk("/pool/disk-modules-abc", "raw", readonly=True))
    return xmldefs.DomainConfig(spec, accel, "/pool/kernel-1", "/pool/initrd-2", disks, emulator)


def _dom(cfg) -> ET.Element:
    return ET.fromstring(xmldefs.domain_xml(cfg))


def test_direct_kernel_boot_with_the_pool_paths_and_the_spec_cmdline():
    dom = _dom(_cfg())
    assert dom.findtext("os/kernel") == "/pool/kernel-1"
    assert dom.findtext("os/initrd") == "/pool/initrd-2"
    assert dom.findtext("os/cmdline") == "console=ttyS0 panic=-1"
    assert (dom.findtext("name"), dom.findtext("vcpu"), dom.find("memory").get("unit"),
            dom.findtext("memory")) == ("lab-x", "2", "MiB", "1024")
    # any end of the guest ends the transient domain (-no-reboot semantics)
    assert [dom.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    assert dom.find("features/acpi") is not None  # poweroff needs ACPI


def test_disks_overlay_first_then_the_read_only_modules_disk():
    disks = _dom(_cfg()).findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("driver").get("type"), d.find("target").get("dev"),
             d.find("target").get("bus"), d.find("readonly") is not None) for d in disks] == [
        ("/pool/lab-x-disk0.qcow2", "qcow2", "vda", "virtio", False),
        ("/pool/disk-modules-abc", "raw", "vdb", "virtio", True)]


def test_forwards_bind_loopback_only_with_restricted_user_networking():
    args = [a.get("value") for a in _dom(_cfg()).findall(f"{Q}commandline/{Q}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert netdev.startswith("user,") and "restrict=on" in netdev.split(",")
    fwds = [p for p in netdev.split(",") if p.startswith("hostfwd=")]
    assert fwds == ["hostfwd=tcp:127.0.0.1:40022-:22", "hostfwd=tcp:127.0.0.1:40080-:8080"]
    assert "virtio-net-pci,netdev=labnet0" in args[args.index("-device") + 1]
    assert _dom(_cfg()).find("devices/interface") is None   # no libvirt-managed network


def test_no_network_means_no_qemu_commandline():
    assert _dom(_cfg(network=False)).find(f"{Q}commandline") is None


def test_console_is_a_pty_serial_the_lab_can_open_as_a_stream():
    dom = _dom(_cfg())
    assert dom.find("devices/serial").get("type") == "pty"
    assert dom.find("devices/console/target").get("type") == "serial"


@pytest.mark.parametrize("accel, dom_type, cpu_mode", [("tcg", "qemu", "maximum"),
                                                       ("kvm", "kvm", "host-passthrough")])
def test_tcg_and_kvm(accel, dom_type, cpu_mode):
    dom = _dom(_cfg(accel=accel))
    assert dom.get("type") == dom_type
    assert dom.find("cpu").get("mode") == cpu_mode


def test_the_single_threaded_tcg_emulator_only_when_given():
    assert _dom(_cfg(emulator="/x/qemu-tcg-single")).findtext("devices/emulator") == "/x/qemu-tcg-single"
    assert _dom(_cfg()).find("devices/emulator") is None


def test_overlay_volume_is_qcow2_backed_by_the_raw_base_volume():
    vol = ET.fromstring(xmldefs.volume_xml("lab-x-disk0.qcow2", 2 << 30, "qcow2", backing="/pool/base-1"))
    assert vol.find("target/format").get("type") == "qcow2"
    assert (vol.findtext("backingStore/path"), vol.find("backingStore/format").get("type")) == (
        "/pool/base-1", "raw")
    assert (vol.findtext("capacity"), vol.findtext("allocation")) == (str(2 << 30), "0")
    pool = ET.fromstring(xmldefs.pool_xml())
    assert (pool.get("type"), pool.findtext("target/path")) == ("dir", xmldefs.POOL_PATH)


# URIs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, host, needs_tunnel", [
    ("qemu:///system", "", False),
    ("qemu+unix:///system", "", False),
    ("qemu+ssh://root@build1.example/system", "build1.example", True),
    ("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1", "127.0.0.1", True),
    ("qemu+tcp://127.0.0.1/system", "127.0.0.1", False),
    ("qemu+tls://kvm7.example/system", "kvm7.example", True),
])
def test_local_and_remote_uris(text, host, needs_tunnel):
    t = uri.parse_uri(text)
    assert (t.host, t.needs_tunnel) == (host, needs_tunnel)


def test_the_tunnel_uses_the_uris_ssh_settings_and_forwards_loopback_to_loopback():
    t = uri.parse_uri("qemu+ssh://lab@10.0.0.5:2222/system?keyfile=/k/id&no_verify=1&command=/bin/myssh")
    cmd = tunnel.tunnel_command(t, [(50001, 40022), (50002, 40080)])
    assert cmd[0] == "/bin/myssh" and cmd[-2:] == ["--", "10.0.0.5"]
    assert cmd[cmd.index("-p") + 1] == "2222" and cmd[cmd.index("-l") + 1] == "lab"
    assert cmd[cmd.index("-i") + 1] == "/k/id" and "StrictHostKeyChecking=no" in cmd
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-L"] == [
        "127.0.0.1:50001:127.0.0.1:40022", "127.0.0.1:50002:127.0.0.1:40080"]
    assert "ExitOnForwardFailure=yes" in cmd and "-N" in cmd


def test_a_plain_tunnel_verifies_host_keys():
    cmd = tunnel.tunnel_command(uri.parse_uri("qemu+ssh://h/system"), [(1, 2)])
    assert "StrictHostKeyChecking=no" not in cmd and cmd[0] == "ssh" and "-p" not in cmd
    assert "BatchMode=yes" in cmd   # an unknown host key fails the tunnel instead of being asked about


def test_a_tunnel_whose_uri_skips_host_key_checks_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    tunnel.Tunnel(uri.parse_uri("qemu+ssh://lab@h1/system?no_verify=1"), {22: 40022}, tmp_path / "t.log", 1, 1)
    assert "no_verify=1: the SSH host key of h1 is not checked" in caplog.text
    caplog.clear()
    tunnel.Tunnel(uri.parse_uri("qemu+ssh://lab@h1/system"), {22: 40022}, tmp_path / "t.log", 1, 1)
    assert not caplog.records


@pytest.mark.parametrize("worker, expected", [
    ("gw0", "qemu+ssh://a/system"), ("gw1", "qemu+ssh://b/system"), ("gw2", "qemu:///system"),
    ("gw3", "qemu+ssh://a/system"), ("", "qemu+ssh://a/system"), ("master", "qemu+ssh://a/system"),
])
def test_each_xdist_worker_takes_its_uri_from_the_pool(worker, expected):
    s = Settings(libvirt_uris=("qemu+ssh://a/system", "qemu+ssh://b/system", "qemu:///system"))
    assert s.libvirt_uri_for(worker) == expected


def test_without_a_pool_every_worker_takes_libvirt_uri():
    assert Settings(libvirt_uri="qemu+ssh://x/system").libvirt_uri_for("gw5") == "qemu+ssh://x/system"


def test_backend_and_uris_come_from_the_environment():
    s = Settings.from_env({"LIVEPATCH_LAB_BACKEND": "libvirt",
                           "LIVEPATCH_LAB_LIBVIRT_URI": "qemu+ssh://r@h/system",
                           "LIVEPATCH_LAB_LIBVIRT_URIS": "qemu:///system, qemu+ssh://h2/system"})
    assert (s.backend, s.libvirt_uri, s.libvirt_uris) == (
        "libvirt", "qemu+ssh://r@h/system", ("qemu:///system", "qemu+ssh://h2/system"))


@pytest.mark.parametrize("env, field", [
    ({"LIVEPATCH_LAB_BACKEND": "xen"}, "LIVEPATCH_LAB_BACKEND"),
    ({"LIVEPATCH_LAB_LIBVIRT_URI": "http://h/system"}, "LIVEPATCH_LAB_LIBVIRT_URI"),
    ({"LIVEPATCH_LAB_LIBVIRT_URIS": "qemu:///system,lxc:///"}, "LIVEPATCH_LAB_LIBVIRT_URIS"),
])
def test_bad_values_name_the_setting_and_the_value(env, field):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.field == field and list(env.values())[0].split(",")[-1] in str(err.value)


# errors --------------------------------------------------------------------------------
class FakeLibvirtError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message

    def get_error_code(self):
        return self.code

    def get_error_message(self):
        return self.message


def test_a_connection_failure_names_the_uri_and_what_to_try():
    exc = FakeLibvirtError(errors.ERR_SYSTEM, "Failed to connect socket to '/run/libvirt/libvirt-sock'")
    err = errors.connect_error(exc, "qemu:///system")
    assert isinstance(err, InfraError)
    assert "qemu:///system" in str(err) and "libvirtd running" in str(err)
    assert "virsh -c 'qemu:///system' list" in str(err)
    assert "libvirt-sock" in str(err)


def test_a_refused_definition_carries_the_xml_as_evidence():
    exc = FakeLibvirtError(errors.ERR_XML_DETAIL, "unsupported configuration: bad cpu")
    err = errors.call_error(exc, "start the domain", "qemu:///system", "<domain>...</domain>")
    assert isinstance(err, InfraError)
    assert "refused the definition" in str(err) and "<domain>...</domain>" in str(err)


def test_a_taken_forward_port_is_retried_like_qemus():
    exc = FakeLibvirtError(1, "qemu unexpectedly closed the monitor: Could not set up host "
                              "forwarding rule 'tcp:127.0.0.1:4022-:22'")
    assert isinstance(errors.call_error(exc, "start the domain", "qemu:///system"), PortInUse)


def test_a_lost_connection_mid_call_is_a_connection_error():
    exc = FakeLibvirtError(errors.ERR_RPC, "Cannot recv data: Connection reset by peer")
    assert "virsh -c" in str(errors.call_error(exc, "destroy", "qemu+ssh://h/system"))


def test_sparse_sections(tmp_path):
    import os
    path = tmp_path / "sparse"
    with open(path, "wb") as fh:
        fh.truncate(8 << 20)
        fh.seek(4 << 20)
        fh.write(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        in_data, length = storage._section(fd, 8 << 20)
        # a filesystem without hole reporting shows one data section: also correct
        assert (in_data, length) in ((False, 4 << 20), (True, 8 << 20))
        os.lseek(fd, 8 << 20, os.SEEK_SET)
        assert storage._section(fd, 8 << 20) == (True, 0)
    finally:
        os.close(fd)


def test_the_package_imports_without_libvirt():
    """libvirt-python is optional: the bindings are imported inside functions only."""
    for path in Path(libvirt.__file__).parent.glob("*.py"):
        src = path.read_text()
        assert "\nimport libvirt" not in src and "\nfrom libvirt" not in src, path.name


# the pool ------------------------------------------------------------------------------
class FakePool:
    """A dir pool whose directory may be missing: starting it then fails unless built first,
    and refreshing an active pool whose directory vanished stops it (as libvirtd does)."""

    def __init__(self, active, dir_exists):
        self.active, self.dir_exists, self.calls = active, dir_exists, []

    def isActive(self):
        return self.active

    def build(self, flags):
        self.calls.append("build")
        self.dir_exists = True

    def create(self, flags):
        self.calls.append("create")
        if not self.dir_exists:
            raise FakeLibvirtError(38, "cannot open directory: No such file or directory")
        self.active = True

    def refresh(self, flags):
        self.calls.append("refresh")
        if not self.dir_exists:
            self.active = False
            raise FakeLibvirtError(38, "cannot open directory: No such file or directory")


class FakeConn:
    def __init__(self, pool):
        self.pool = pool

    def storagePoolLookupByName(self, name):
        assert name == xmldefs.POOL_NAME
        return self.pool


@pytest.fixture
def fake_libvirt(monkeypatch):
    import types
    fake = types.SimpleNamespace(libvirtError=FakeLibvirtError)
    for module in (storage, libvirt.connection):
        monkeypatch.setattr(module, "bindings", lambda: fake)


@pytest.mark.parametrize("active, dir_exists", [(False, False), (False, True), (True, False)],
                         ids=["stopped-dir-gone", "stopped", "running-dir-gone"])
def test_the_pool_is_rebuilt_and_started_whatever_state_the_host_left_it_in(
        fake_libvirt, active, dir_exists):
    pool = FakePool(active, dir_exists)
    assert storage.ensure_pool(FakeConn(pool)) is pool
    assert pool.active and pool.dir_exists
    assert pool.calls[-1] == "refresh"


def test_a_running_pool_is_only_refreshed(fake_libvirt):
    pool = FakePool(True, True)
    storage.ensure_pool(FakeConn(pool))
    assert pool.calls == ["refresh"]
