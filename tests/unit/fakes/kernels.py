"""A Debian archive and kernel cache in miniature: package records, definitions, cached
kernels, bzImages and .debs, for the kernel tests and the cache survey's."""
import hashlib
import json
import struct
import subprocess
from pathlib import Path

from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import cache as kernelcache
from livepatch_lab.supply.apt import PackageRecord
from livepatch_lab.supply.kernels.kernel import Kernel
from livepatch_lab.supply.kernels.defs import KernelDef


def rec(package, version, depends="", size=1000):
    return PackageRecord(package=package, version=version, source="linux", depends=depends,
                         filename=f"pool/{package}_{version}_amd64.deb",
                         sha256=hashlib.sha256(f"{package}{version}".encode()).hexdigest(),
                         size=size)


def debian_kernel(abi, version, kbuild="6.1", compiler="linux-compiler-gcc-12-x86"):
    """The packages one 6.1-style Debian kernel build puts in the archive."""
    return [
        rec(f"linux-image-{abi}-amd64-unsigned", version, "kmod, linux-base (>= 4.3~)"),
        rec(f"linux-image-{abi}-amd64", version, "kmod"),
        rec(f"linux-image-{abi}-cloud-amd64-unsigned", version),
        rec(f"linux-image-{abi}-rt-amd64-unsigned", version),
        rec(f"linux-headers-{abi}-amd64", version,
            f"linux-headers-{abi}-common (= {version}), linux-kbuild-{kbuild} (>= {version}), "
            f"{compiler}"),
        rec(f"linux-headers-{abi}-common", version),
        rec(f"linux-headers-{abi}-common-rt", version),
        rec(f"linux-kbuild-{kbuild}", version, "libc6 (>= 2.34)"),
    ]


def bookworm_archive():
    return [
        *debian_kernel("6.1.0-50", "6.1.176-1"),
        *debian_kernel("6.1.0-56", "6.1.192-2"),
        *debian_kernel("6.1.0-55", "6.1.192-1"),
        # 6.12 backports share the suites; series must keep them out
        *debian_kernel("6.12.117+deb12", "6.12.117-1~deb12u1", kbuild="6.12.117+deb12",
                       compiler="gcc-14"),
        rec("linux-base", "4.9"),
        rec("linux-compiler-gcc-12-x86", "6.1.192-2", "gcc-12"),
    ]


def defn(tmp_path=Path("/k"), **kw) -> KernelDef:
    base = dict(name="debian-6.1", kind="debian", source=tmp_path / "debian-6.1.yaml",
                suites=("bookworm", "bookworm-security"), series="6.1", flavour="amd64")
    base.update(kw)
    return KernelDef(**base)


def fake_bzimage(path: Path, release: str) -> None:
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x200)
    text = f"{release} (someone@host) #1 SMP PREEMPT_DYNAMIC".encode() + b"\0"
    head[0x400:0x400 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head))


def fake_cached(settings: Settings, d: KernelDef, version: str, release: str, **manifest) -> Path:
    """A complete cache entry as ``kernelfetch`` writes it; ``manifest`` overrides its keys."""
    vdir = settings.kernels_dir / d.name / version
    root = vdir / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"k")
    (root / "lib/modules" / release).mkdir(parents=True)
    (root / "lib/modules" / release / "modules.dep").write_text("")
    (root / "usr/src" / f"linux-headers-{release}").mkdir(parents=True)
    m = {"format": kernelcache.MANIFEST_FORMAT, "name": d.name, "kind": "debian", "series": d.series,
         "flavour": d.flavour, "suites": list(d.suites), "version": version, "release": release, "compiler": "gcc-12",
         "module_compression": "none", "location": str(vdir.absolute()),
         "paths": {"vmlinuz": f"root/boot/vmlinuz-{release}",
                   "modules_dir": f"root/lib/modules/{release}",
                   "build_dir": f"root/usr/src/linux-headers-{release}", "config": None},
         "packages": [{"name": "linux-image-x", "version": version, "sha256": "ab", "size": 1,
                       "file": apt.deb_name("linux-image-x", version), "depends": "kmod"}]}
    m.update(manifest)
    (vdir / "manifest.json").write_text(json.dumps(m))
    return vdir


def build_deb(workdir: Path, package: str, version: str, files: dict, links: dict = {},
              depends: str = "") -> Path:
    tree = workdir / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "Maintainer: lab <lab@localhost>\nDescription: test package\n")
    for rel, data in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    for rel, target in links.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)
    out = workdir / apt.deb_name(package, version)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", tree, out], check=True,
                   capture_output=True)
    return out


def fake_kernel(tmp_path: Path, name="debian-6.1", release="6.1.0-56-amd64", version="6.1.192-2",
                compiler="gcc-12", *, cached=False, **fields) -> Kernel:
    """A ``Kernel`` with a real (empty) build directory: in a cache entry when ``cached``
    (its ``cache_entry`` set), else a tree outside the cache. ``fields``: other Kernel fields."""
    vdir = tmp_path / "kernels" / name / version
    build_dir = vdir / "root/usr/src" / f"linux-headers-{release}"
    build_dir.mkdir(parents=True, exist_ok=True)
    values = dict(name=name, release=release, version=version, vmlinuz=vdir / "vmlinuz",
                  modules_dir=vdir / "modules", build_dir=build_dir, config=None,
                  compiler=compiler, packages=(), cache_entry=vdir if cached else None)
    values.update(fields)
    return Kernel(**values)
