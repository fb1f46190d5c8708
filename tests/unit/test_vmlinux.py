"""The bzImage → PVH ELF unpacking, on synthetic images (no kernel needed)."""
import gzip
import lzma
import struct

import pytest

from livepatch_lab.supply import vmlinux


def fake_bzimage(kernel: bytes, setup_sects: int = 2) -> bytes:
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", head, 0x248, 16, len(kernel))
    return bytes(head) + b"\0" * 16 + kernel + b"trailer"


def fake_elf(with_pvh: bool) -> bytes:
    note_name = b"Xen\0"
    ntype = 18 if with_pvh else 5
    note = struct.pack("<III", 4, 4, ntype) + note_name + struct.pack("<I", 0x1000000)
    ehdr = bytearray(64)
    ehdr[:4], ehdr[4] = b"\x7fELF", 2
    struct.pack_into("<Q", ehdr, 0x20, 64)          # phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)      # phentsize, phnum
    note_off = 64 + 56
    phdr = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(note), len(note), 4)
    return bytes(ehdr) + phdr + note


@pytest.mark.parametrize("compress", [lambda b: lzma.compress(b, format=lzma.FORMAT_XZ),
                                      gzip.compress], ids=["xz", "gzip"])
def test_the_payload_decompresses_to_the_kernel_elf(compress):
    elf = fake_elf(True)
    assert vmlinux.decompress(vmlinux.payload(fake_bzimage(compress(elf)))) == elf


def test_the_pvh_entry_note_is_recognised():
    assert vmlinux.has_pvh_note(fake_elf(True))
    assert not vmlinux.has_pvh_note(fake_elf(False))
    assert not vmlinux.has_pvh_note(b"not an elf at all")


def test_something_that_is_not_a_bzimage_is_refused():
    with pytest.raises(vmlinux.NotExtractable, match="bzImage"):
        vmlinux.payload(b"\0" * 4096)
    with pytest.raises(vmlinux.NotExtractable, match="compression"):
        vmlinux.decompress(b"LZ4?????")


def test_a_kernel_without_pvh_is_remembered_and_one_with_it_is_cached(tmp_path):
    without = tmp_path / "plain"
    without.write_bytes(fake_bzimage(gzip.compress(fake_elf(False))))
    assert vmlinux.pvh_kernel(without, tmp_path / "c", 5) is None
    assert vmlinux.pvh_kernel(without, tmp_path / "c", 5) is None   # remembered

    with_pvh = tmp_path / "pvh"
    with_pvh.write_bytes(fake_bzimage(gzip.compress(fake_elf(True))))
    path = vmlinux.pvh_kernel(with_pvh, tmp_path / "c", 5)
    assert path is not None and path.read_bytes() == fake_elf(True)
    assert vmlinux.pvh_kernel(with_pvh, tmp_path / "c", 5) == path
