"""ext4 filesystems from a directory tree, without mounting (guest images, modules disks)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..core import hostcmd
from ..core.settings import Settings

# ext4 features every kernel the lab boots (5.10 and later) mounts. Passed
# through our own mke2fs.conf, so a newer host e2fsprogs (orphan_file,
# metadata_csum_seed by default) cannot make a filesystem an old kernel refuses.
MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
"""

def mke2fs(tree: Path, image: Path, size_bytes: int, label: str, settings: Settings, *,
           journal: bool = True, inodes: Optional[int] = None,
           uuid: Optional[str] = None) -> None:
    """An ext4 filesystem in the (new, sparse) file ``image``, filled from ``tree``; no mounting."""
    conf = image.parent / f".{image.name}.mke2fs.conf"
    conf.write_text(MKE2FS_CONF)
    cmd: list[Union[str, Path]] = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-m", "0",
                                   "-d", tree]
    if not journal:
        cmd += ["-O", "^has_journal"]
    if inodes:
        cmd += ["-N", str(inodes)]
    if uuid:
        cmd += ["-U", uuid]
    cmd += [image, f"{(size_bytes + 1023) // 1024}k"]
    try:
        hostcmd.run(cmd, what=f"make the {label} filesystem", timeout=settings.timeouts.image_build,
                    env={**os.environ, "MKE2FS_CONFIG": str(conf)})
    finally:
        conf.unlink(missing_ok=True)
