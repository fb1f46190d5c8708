"""A source package's files as the signed Sources index lists them: names, hashes, URLs."""
from livepatch_lab.supply import aptsources

SOURCES = """\
Package: kpatch
Binary: kpatch, kpatch-build
Version: 0.9.10-1
Directory: pool/main/k/kpatch
Checksums-Sha256:
 aaaa 2000 kpatch_0.9.10-1.dsc
 bbbb 341303 kpatch_0.9.10.orig.tar.gz
 cccc 9000 kpatch_0.9.10-1.debian.tar.xz

Package: other
Version: 1.0-1
Directory: pool/main/o/other
Checksums-Sha256:
 dddd 10 other_1.0-1.dsc
"""


def test_the_files_of_a_source_package_come_with_their_hashes_and_pool_urls():
    (rec,) = aptsources.parse_sources(SOURCES, "http://deb.debian.org/debian/", lambda n: n == "kpatch")
    assert (rec.package, rec.version) == ("kpatch", "0.9.10-1")
    orig = next(f for f in rec.files if f.name.endswith(".orig.tar.gz"))
    assert (orig.sha256, orig.size) == ("bbbb", 341303)
    assert orig.url == "http://deb.debian.org/debian/pool/main/k/kpatch/kpatch_0.9.10.orig.tar.gz"
    assert len(rec.files) == 3


def test_a_deb_src_root_is_kept_apart_from_the_binary_one(tmp_path):
    from livepatch_lab.core.settings import Settings
    from livepatch_lab.supply import apt
    s = Settings(cache_dir=tmp_path)
    src, binary = apt.root_for(s, ["trixie"], sources=True), apt.root_for(s, ["trixie"])
    assert src.path != binary.path and src.sources_list.startswith("deb-src [signed-by=")
    assert binary.sources_list.startswith("deb [signed-by=")
