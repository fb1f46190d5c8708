"""Check a results document (``--json`` / ``--lab-json``) against its JSON Schema
(harness/lab/results.schema.json).

    python tests/results_schema.py FILE...

Exit 0 when every file is valid, 1 naming each error (its path in the document), 2 when a file
cannot be read. `.ci/run` runs it on the document of every scenario CI ran.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livepatch_lab.lab.matrix import SCHEMA_FILE  # noqa: E402


def errors(doc: Any) -> list[str]:
    """Every way ``doc`` breaks the schema, as "path: message"."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def main(paths: list[str]) -> int:
    status = 0
    for name in paths:
        try:
            doc = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            print(f"{name}: cannot read it: {exc}")
            return 2
        found = errors(doc)
        for e in found:
            print(f"{name}: {e}")
        if found:
            status = 1
        else:
            print(f"{name}: valid (schema {doc['schema']}, {len(doc['results'])} results)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
