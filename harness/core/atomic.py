"""Files another process may read at any moment: they appear whole, or not at all."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Union


def write(path: Path, data: Union[str, bytes]) -> None:
    """Write ``data`` to a hidden temporary beside ``path``, then rename it over ``path``.

    A reader sees the old content or the new, never a torn file; writers racing
    (xdist workers, threads) each rename their own temporary and the last one wins.
    The temporary's name can be guessed, so it is made anew (O_EXCL, O_NOFOLLOW): a file
    or symlink someone put there is never written through. Its mode is what the umask gives.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
