"""``manifest.json``: every file of a report with its sha256, and the runs' inputs.

``verify`` recomputes it all. It catches any change to the files after the report
was made; a change made together with a rewritten manifest is caught only by
comparing the manifest's own sha256 with a copy kept elsewhere (the CLI prints
it, the GitHub job summary shows it).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ....core.errors import ConfigError
from ....supply.apt import sha256_file

NAME = "manifest.json"
FORMAT = 1


def files_of(report_dir: Path) -> dict[str, Path]:
    """Every file under ``report_dir`` but the manifest, by its relative POSIX path."""
    out = {}
    for root, dirs, names in os.walk(report_dir):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            rel = path.relative_to(report_dir).as_posix()
            if rel != NAME:
                out[rel] = path
    return out


def write(report_dir: Path, inputs: dict[str, Any]) -> str:
    """Write the manifest of everything now in ``report_dir``; return the manifest's sha256."""
    doc = {"format": FORMAT, "files": {rel: sha256_file(p) for rel, p in files_of(report_dir).items()},
           "inputs": inputs}
    path = report_dir / NAME
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return sha256_file(path)


@dataclass
class Check:
    """What ``verify`` found: ``matched`` files, and every problem by kind."""
    matched: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)    # a recorded input that its file contradicts
    manifest_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unexpected or self.inputs)

    def problems(self) -> list[str]:
        return ([f"changed: {p}" for p in self.changed] + [f"missing: {p}" for p in self.missing] +
                [f"unexpected: {p} (not in the manifest)" for p in self.unexpected] +
                [f"input differs: {p}" for p in self.inputs])


def _load(report_dir: Path) -> dict[str, Any]:
    path = report_dir / NAME
    if not report_dir.is_dir():
        raise ConfigError(f"{report_dir} is not a directory")
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{report_dir} is not a sign-off report: {exc.strerror}: {NAME}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("format") != FORMAT or not isinstance(files, dict):
        raise ConfigError(f"{path} is not a livepatch-lab manifest (format {FORMAT} with a files map)")
    for rel in files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not rel:
            raise ConfigError(f"{path} names a file outside the report: {rel!r}")
    return doc


def verify(report_dir: Path) -> Check:
    """Recompute every hash the manifest lists; raises ``ConfigError`` for a missing or
    malformed manifest."""
    report_dir = Path(report_dir)
    doc = _load(report_dir)
    check = Check(manifest_sha256=sha256_file(report_dir / NAME))
    present = files_of(report_dir)
    actual: dict[str, str] = {}
    for rel, want in sorted(doc["files"].items()):
        path = present.get(rel)
        if path is None or path.is_symlink() or not path.is_file():
            check.missing.append(rel)
            continue
        actual[rel] = sha256_file(path)
        if actual[rel] == want:
            check.matched += 1
        else:
            check.changed.append(rel)
    check.unexpected = sorted(set(present) - set(doc["files"]))
    for run in (doc.get("inputs") or {}).get("runs") or []:
        for mod in run.get("modules") or []:
            copy = mod.get("copy")
            if copy and copy in actual and actual[copy] != mod.get("sha256"):
                check.inputs.append(f"{run.get('run')}: {mod.get('role')} {mod.get('name')} was recorded "
                                    f"as sha256 {mod.get('sha256')}, its copy {copy} is {actual[copy]}")
    return check
