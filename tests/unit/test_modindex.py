"""The module index: names, hard and soft dependencies, aliases, built-ins, the load order."""
import pytest

from livepatch_lab.core.errors import InfraError
from livepatch_lab.supply.modindex import ModuleIndex, module_name

# A kernel in miniature: virtio_pci/virtio_blk/ext4 as modules, one helper built in.
DEP = """\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/net/dummy.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko:
"""
SOFTDEP = "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c post: dummy\n"
ALIAS = ("alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n"
         "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n")


def index(builtin: str = "", modinfo: bytes = b"") -> ModuleIndex:
    return ModuleIndex.parse(DEP, builtin, SOFTDEP, ALIAS, modinfo)


def names(order):
    return [n for n, _ in order]


def test_module_names_drop_suffixes_and_use_underscores():
    assert module_name("kernel/fs/ext4/ext4.ko") == "ext4"
    assert module_name("kernel/x/crc32c-intel.ko.zst") == "crc32c_intel"
    assert module_name("kernel/x/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("virtio_blk") == "virtio_blk"


def test_dependencies_load_first_in_modprobe_order():
    order = names(index().load_order(["virtio_pci", "virtio_blk", "ext4"]))
    assert order == ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk",
                     "crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"]
    for mod, deps in index().deps.items():
        if mod in order:
            assert all(order.index(d) < order.index(mod) for d in deps), mod


def test_soft_dependencies_resolve_through_aliases_to_the_generic_module_and_are_optional():
    order = dict(index().load_order(["ext4"]))
    assert order["crc32c_generic"] is False
    assert "crc32c_intel" not in order
    assert order["ext4"] is True and order["jbd2"] is True
    assert "dummy" not in order  # post: soft dependencies are not loaded first


def test_builtin_modules_and_builtin_aliases_are_skipped():
    builtin = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n"
    assert names(index(builtin).load_order(["ext4", "virtio_blk"])) == [
        "virtio_ring", "virtio", "virtio_blk"]
    # crc32c built in (seen through modules.builtin.modinfo): no soft dependency to load
    modinfo = b"crc32c_generic.alias=crypto-crc32c\0crc32c_generic.license=GPL\0"
    assert "crc32c_generic" not in names(index(modinfo=modinfo).load_order(["ext4"]))
    everything = "\n".join(line.split(":")[0] for line in DEP.splitlines())
    assert index(everything).load_order(["virtio_pci", "virtio_blk", "ext4"]) == []


def test_a_missing_wanted_module_is_an_infra_error_and_a_missing_optional_one_is_skipped():
    with pytest.raises(InfraError, match="nvme"):
        index().load_order(["nvme"])
    assert names(index().load_order([], ["virtio_rng"])) == []


def test_optional_modules_share_required_dependencies_and_mark_only_their_own_optional():
    order = index().load_order(["virtio_blk"], ["virtio_net"])
    assert order == [("virtio_ring", True), ("virtio", True), ("virtio_blk", True),
                     ("net_failover", False), ("virtio_net", False)]


def test_a_module_needed_after_being_optional_becomes_required_with_its_closure():
    idx = ModuleIndex.parse("a.ko: b.ko\nb.ko:\nc.ko: a.ko\nd.ko:\n", softdep="softdep d pre: a\n")
    assert idx.load_order(["d", "c"]) == [("b", True), ("a", True), ("d", True), ("c", True)]


def test_a_dependency_cycle_is_reported():
    idx = ModuleIndex.parse("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(InfraError, match="cycle"):
        idx.load_order(["a"])


def test_a_dependency_missing_from_modules_dep_is_reported():
    with pytest.raises(InfraError, match="needs b"):
        ModuleIndex.parse("a.ko: b.ko\n").load_order(["a"])
