"""The lab's version, in one place (pyproject.toml's)."""
__version__ = "0.1.0"
