"""A selftests file: which of the kernel's selftests to run, where, and what else beside them.

```yaml
selftests: livepatch          # the kernel's tools/testing/selftests/livepatch
kernels: [debian-6.1]         # the lines when none is chosen (--lab-kernel); default: all
scripts: [test-livepatch.sh]  # only these of the kernel's scripts (default: all of them)
extra_scripts: [mine.sh]      # scripts of your own, run beside the kernel's functions.sh
```

Validated by ``core.yamlconf`` like scenarios: unknown keys, wrong types and missing
files are refused with the file, line and field named.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...core import yamlconf
from ...core.yamlconf import Field

SUITES = ("livepatch",)
KEY = "selftests"      # the top-level key that makes a YAML file a selftests file
SCHEMA: yamlconf.Schema = {
    KEY: Field(str, required=True, check=yamlconf.one_of(SUITES), doc="which of the kernel's selftests"),
    "name": Field(str, check=yamlconf.matches(r"[A-Za-z0-9][\w.+-]*", "a plain name")),
    "description": Field(str, default=""),
    "kernels": Field(list, items=str, doc="kernel lines when none is chosen on the command line"),
    "scripts": Field(list, items=str, unique=True, check=lambda v: next(
        (f"not a script name: {s!r}" for s in v if not re.fullmatch(r"[\w.+-]+\.sh", s)), None)),
    "extra_scripts": Field(list, items=Field(Path), default=[], doc="your own scripts, beside functions.sh"),
}


@dataclass(frozen=True)
class SelftestsSpec:
    name: str
    path: Path
    suite: str = "livepatch"
    description: str = ""
    kernels: Optional[tuple[str, ...]] = None
    scripts: Optional[tuple[str, ...]] = None
    extra_scripts: tuple[Path, ...] = ()


def load(path: Path) -> SelftestsSpec:
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA)
    v = loaded.values
    extra = tuple(Path(p) for p in v["extra_scripts"])
    for i, p in enumerate(extra):
        if not p.is_file():
            raise loaded.error(f"{p} does not exist", f"extra_scripts[{i}]")
    return SelftestsSpec(name=v["name"] or path.stem, path=path, suite=v[KEY], description=v["description"],
                         kernels=tuple(v["kernels"]) if v["kernels"] is not None else None,
                         scripts=tuple(v["scripts"]) if v["scripts"] is not None else None,
                         extra_scripts=extra)
