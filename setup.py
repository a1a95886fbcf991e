"""Packages of the wheel: everything under jaxprobe/, and configs/ shipped inside it as ``jaxprobe.configs``.

Everything else about the build is in pyproject.toml. configs/ stays at the top of the source tree (where the
README and ``--config configs/demo.py`` expect it) and is mapped into the package, so ``pip install .`` followed by
``jaxprobe demo`` works from any directory (``jaxprobe.config.shipped_configs`` finds it there).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["jaxprobe*"]), "jaxprobe.configs"], package_dir={"jaxprobe.configs": "configs"})
