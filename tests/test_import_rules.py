"""DESIGN.md's import rules, checked on the source (every import, lazy ones included) and in a fresh interpreter.

The rules keep each stage usable on its own: probes and scoring run on a feature store without loading models,
TFDS or the report's matplotlib; stats is shared by all of them and depends on none.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxprobe"

# package -> module prefixes it must never import (directly or lazily)
FORBIDDEN = {
    "stats": ("jax", "flax", "optax", "tensorflow_datasets", "torch", "transformers", "jaxprobe.models",
              "jaxprobe.families", "jaxprobe.data", "jaxprobe.probes", "jaxprobe.scoring", "jaxprobe.report",
              "jaxprobe.capture", "jaxprobe.weights"),
    "probes": ("tensorflow_datasets", "torch", "transformers", "jaxprobe.models", "jaxprobe.families",
               "jaxprobe.data", "jaxprobe.report", "jaxprobe.scoring", "jaxprobe.capture", "jaxprobe.weights"),
    "scoring": ("jax", "flax", "tensorflow_datasets", "torch", "transformers", "matplotlib", "jaxprobe.models",
                "jaxprobe.families", "jaxprobe.data", "jaxprobe.report", "jaxprobe.probes", "jaxprobe.capture",
                "jaxprobe.weights"),
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (top level, functions, try blocks)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _violates(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_source_imports_follow_design(package):
    offences = [f"{path.relative_to(PACKAGE.parent)} imports {module}"
                for path in sorted((PACKAGE / package).rglob("*.py"))
                for module in sorted(imported_modules(path))
                if any(_violates(module, prefix) for prefix in FORBIDDEN[package])]
    assert not offences, "\n".join(offences)


def test_fresh_interpreter_loads_neither_tfds_nor_models():
    """Importing every probes/scoring/stats module pulls in no TFDS, model, family, data or report code."""
    modules = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
               for package in FORBIDDEN for p in sorted((PACKAGE / package).rglob("*.py"))]
    script = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
              "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow_datasets', 'torch', "
              "'transformers', 'matplotlib') or m.startswith(('jaxprobe.models', 'jaxprobe.families', "
              "'jaxprobe.data', 'jaxprobe.report', 'jaxprobe.capture', 'jaxprobe.weights')))\n"
              "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "", out.stdout


MODELS_MAY_IMPORT = ("jax", "flax", "numpy", "jaxprobe.models")


def test_models_import_only_jax_flax_numpy_and_themselves():
    offences = []
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        for module in sorted(imported_modules(path)):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or any(_violates(module, allowed) for allowed in MODELS_MAY_IMPORT):
                continue
            offences.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not offences, "\n".join(offences)


def test_only_families_know_families_and_transformers():
    """Outside families/, no module imports a family folder, transformers or torch (parity reaches the PyTorch
    reference through ``Family.reference()``)."""
    family_folders = [f"jaxprobe.families.{p.name}" for p in (PACKAGE / "families").iterdir() if p.is_dir()
                      and (p / "__init__.py").is_file()]
    assert family_folders, "no family folders found"
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "families"):
            continue
        for module in sorted(imported_modules(path)):
            if any(_violates(module, prefix) for prefix in (*family_folders, "transformers", "torch")):
                offences.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not offences, "\n".join(offences)


def test_weights_know_no_models_or_families():
    forbidden = ("jaxprobe.models", "jaxprobe.families", "jaxprobe.capture", "jaxprobe.probes", "jaxprobe.scoring",
                 "jaxprobe.report", "jaxprobe.data", "transformers", "torch")
    offences = [f"{path.relative_to(PACKAGE.parent)} imports {module}"
                for path in sorted((PACKAGE / "weights").rglob("*.py")) for module in sorted(imported_modules(path))
                if any(_violates(module, prefix) for prefix in forbidden)]
    assert not offences, "\n".join(offences)
