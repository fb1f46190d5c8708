"""Where the lab's own data lives: kernels/ and images/ (with images/guest/).

In a checkout they sit at the top level beside harness/ (the source of the package livepatch_lab);
an installed wheel carries them as package data under livepatch_lab/data/ (pyproject.toml's
package-dir maps them there), so a vendor's venv has the same definitions, recipes and guest
scripts as the checkout.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
TOP = PACKAGE.parent        # a checkout's top level (its .git names the lab's version)
DATA = PACKAGE / "data" if (PACKAGE / "data" / "kernels").is_dir() else TOP
KERNELS_DIR = DATA / "kernels"
IMAGES_DIR = DATA / "images"
GUEST_DIR = IMAGES_DIR / "guest"
