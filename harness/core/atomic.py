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
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
