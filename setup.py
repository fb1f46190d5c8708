"""The package list, which pyproject.toml cannot compute: the source tree's harness/ installs as
livepatch_lab (package-dir in pyproject.toml), so setuptools' find cannot name its subpackages
itself. Everything else is declared in pyproject.toml."""
from setuptools import find_namespace_packages, setup

DATA = ["livepatch_lab.data.kernels", "livepatch_lab.data.images", "livepatch_lab.data.images.guest"]
INNER = find_namespace_packages("harness", exclude=["*__pycache__*"])   # templates/ too: data
setup(packages=["livepatch_lab", *(f"livepatch_lab.{p}" for p in INNER), *DATA])
