"""A source fix as a unified diff: read, checked and described before anything runs.

kpatch-build (and ``patch -p1``, which the lab uses to check that a diff applies to each
kernel's source) take a unified diff whose paths carry one leading directory (``a/``,
``b/``), as ``git diff`` and ``diff -u a/ b/`` write them. What is not such a diff is
refused here, naming the file and line: a text without a file header or hunk, a hunk whose
line counts disagree with its header (a hand-edited or truncated diff), a binary patch, a
path that is absolute or climbs out of the tree. What the builder cannot turn into a
livepatch (a changed data structure, an assembly file) is the builder's to say, later.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from ...core.errors import ConfigError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_BINARY = ("GIT binary patch", "Binary files ")
DEV_NULL = "/dev/null"


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    line: int            # where its @@ header is in the diff (1-based)
    header: str          # the @@ line itself


@dataclass(frozen=True)
class FileChange:
    path: str            # in the kernel tree (one leading directory stripped)
    hunks: tuple[Hunk, ...]
    created: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class Diff:
    path: Path
    sha256: str
    files: tuple[FileChange, ...]

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def hunk(self, path: str, number: int) -> Optional[Hunk]:
        """Hunk ``number`` (1-based, as ``patch`` counts them) of ``path``."""
        for f in self.files:
            if f.path == path and 1 <= number <= len(f.hunks):
                return f.hunks[number - 1]
        return None


def _strip(raw: str, what: str, where: str, line: int) -> Optional[str]:
    """``a/fs/proc/cmdline.c`` -> ``fs/proc/cmdline.c``; None for /dev/null."""
    name = raw.split("\t", 1)[0].strip()
    if name == DEV_NULL:
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigError(f"{what} path {name!r} is absolute or leaves the kernel tree", source=where, line=line)
    if len(p.parts) < 2:
        raise ConfigError(f"{what} path {name!r} has no leading directory to strip: the builder applies "
                          "diffs with -p1, so paths look like a/fs/x.c and b/fs/x.c (git diff, diff -u a/ b/)",
                          source=where, line=line)
    return "/".join(p.parts[1:])


def parse(text: str, where: str = "diff") -> tuple[FileChange, ...]:
    """The files a unified diff changes, with their hunks; ``ConfigError`` naming ``where``
    and the line for anything that is not a well-formed unified diff of text files."""
    lines = text.splitlines()
    files: list[FileChange] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_BINARY):
            raise ConfigError("binary patches cannot be built into a livepatch", source=where, line=i + 1)
        if not (line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1     # commit message, `diff --git`, `index` lines: not ours to read
            continue
        old = _strip(line[4:], "old", where, i + 1)
        new = _strip(lines[i + 1][4:], "new", where, i + 2)
        if old is None and new is None:
            raise ConfigError("both sides of a file header are /dev/null", source=where, line=i + 1)
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise ConfigError(f"malformed hunk header {lines[i]!r}", source=where, line=i + 1)
            olen = 1 if m.group(2) is None else int(m.group(2))
            nlen = 1 if m.group(4) is None else int(m.group(4))
            hunks.append(Hunk(int(m.group(1)), olen, int(m.group(3)), nlen, i + 1, lines[i]))
            i = _hunk_body(lines, i + 1, olen, nlen, where)
        if not hunks:
            raise ConfigError(f"file header for {new or old} has no hunk", source=where, line=i)
        files.append(FileChange(new or old or "", tuple(hunks), created=old is None, deleted=new is None))
    if not files:
        raise ConfigError("not a unified diff: no '--- a/...' / '+++ b/...' file header with a hunk "
                          "(make one with `git diff` or `diff -u`)", source=where)
    return tuple(files)


def _hunk_body(lines: list[str], i: int, olen: int, nlen: int, where: str) -> int:
    """Past the body of a hunk starting at ``lines[i]``: its counts must match its header."""
    start = i
    o = n = 0
    while i < len(lines) and (o < olen or n < nlen):
        line = lines[i]
        tag = line[:1]
        if tag in (" ", ""):      # a context line (an empty one lost its space to an editor)
            o, n = o + 1, n + 1
        elif tag == "-":
            o += 1
        elif tag == "+":
            n += 1
        elif tag != "\\":         # "\ No newline at end of file"
            break
        i += 1
    while i < len(lines) and lines[i].startswith("\\"):
        i += 1
    if o != olen or n != nlen:
        raise ConfigError(f"hunk at line {start} says -{olen} +{nlen} lines but has -{o} +{n}: the diff "
                          "is truncated or was edited by hand", source=where, line=start)
    return i


def load(path: Path, field: Optional[str] = None) -> Diff:
    """Read and check the diff at ``path``."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the diff: {exc.strerror or exc}", source=where, field=field) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")   # a diff of a file in another encoding is still a diff
    try:
        files = parse(text, where)
    except ConfigError as exc:
        if field and not exc.field:
            raise ConfigError(exc.message, source=exc.source, field=field, line=exc.line) from None
        raise
    return Diff(Path(path).resolve(), hashlib.sha256(data).hexdigest(), files)


def looks_like_diff(path: Path) -> bool:
    """A file named ``*.patch``/``*.diff``, or one whose first KiB has a unified diff's header."""
    if path.suffix in (".patch", ".diff"):
        return True
    try:
        head = path.read_bytes()[:1024].decode("utf-8", "replace")
    except OSError:
        return False
    return bool(re.search(r"^--- \S.*\n\+\+\+ \S", head, re.M))
