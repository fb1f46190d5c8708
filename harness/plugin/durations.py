"""Longest first: a parallel run ends when its longest item does, so scenario items are ordered
by the seconds each took last time (kept in the cache's durations.json)."""
from __future__ import annotations

import pytest

from .scenario_items import ScenarioItem, item_name
from .settings import settings_for

DURATIONS_FILE = "durations.json"   # in the cache dir: "scenario[kernel]" -> seconds, last run


def durations_path(config: pytest.Config):
    try:
        return settings_for(config).cache_dir / DURATIONS_FILE
    except Exception:  # bad settings are reported where they are used, not here
        return None


def load_durations(path) -> dict[str, float]:
    import json
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def longest_first(items: list, durations: dict[str, float]) -> None:
    """Scenario items reordered in their own slots, longest last-known run first, unknown
    ones before all (LPT: a parallel run ends when its longest item does, so start it
    first; with xdist, --dist worksteal lets an idle worker take what waits behind it)."""
    slots = [i for i, it in enumerate(items) if isinstance(it, ScenarioItem)]
    ordered = sorted((items[i] for i in slots), key=lambda it: -durations.get(it.duration_key, float("inf")))
    for i, it in zip(slots, ordered):
        items[i] = it


def record_durations(path, rows: list[dict]) -> None:
    """Merge this run's scenario seconds into the durations file (atomically)."""
    import json

    from ..core import atomic
    if path is None or not rows:
        return
    data = load_durations(path)
    data.update({item_name(r["lab_scenario"], r["lab_kernel"]): r["seconds"] for r in rows})
    atomic.write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
