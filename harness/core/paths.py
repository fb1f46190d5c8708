"""Where the lab's own data lives: the checkout's top level (kernels/, images/, scenarios/)."""
from __future__ import annotations

from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
KERNELS_DIR = TOP / "kernels"
IMAGES_DIR = TOP / "images"
GUEST_DIR = IMAGES_DIR / "guest"
