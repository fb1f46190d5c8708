"""What the command line's options name on this host: the lab's ``Settings`` (an error naming the
option the user typed, not the field) and directories the commands write into, made and checked
writable before anything runs.
"""
from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Optional

from ..core.errors import ConfigError
from ..core.settings import Settings

# Settings fields set by an option, so an error names what the user typed.
_OPTIONS = {"memory_mib": "--memory", "cpus": "--cpus", "libvirt_uri": "--libvirt-uri", "accel": "--accel",
            "backend": "--backend"}


def settings_for(args: argparse.Namespace, *, check_cache: bool = True) -> Settings:
    try:
        settings = Settings.from_env(cache_dir=args.cache_dir, accel=getattr(args, "accel", None),
                                     memory_mib=getattr(args, "memory", None), cpus=getattr(args, "cpus", None),
                                     backend=getattr(args, "backend", None),
                                     libvirt_uri=getattr(args, "libvirt_uri", None),
                                     snapshots=False if getattr(args, "no_snapshots", False) else None)
    except ConfigError as exc:
        if exc.source is None and exc.field in _OPTIONS:
            raise ConfigError(exc.message, field=_OPTIONS[exc.field]) from None
        raise
    if not check_cache:   # doctor reports an unusable cache as one of its checks
        return settings
    return settings.usable_cache("--cache-dir" if args.cache_dir else "LIVEPATCH_LAB_CACHE")


def writable_dir(path, option: str, *, keep: bool = True) -> Optional[Path]:
    """``path`` made if missing and writable, or a ``ConfigError`` naming ``option``; None stays None.
    ``keep=False`` only checks: what it made is removed again, so a command refused after the
    check leaves nothing behind (the folder is made for real once everything is checked)."""
    if path is None:
        return None
    path = Path(path)
    missing = list(itertools.takewhile(lambda p: not p.exists(), [path, *path.parents]))
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise ConfigError(f"cannot write to {path}: {exc.strerror or exc}", field=option) from None
    finally:
        for made in missing if not keep else ():   # the deepest first
            try:
                made.rmdir()
            except OSError:
                break
    return path
