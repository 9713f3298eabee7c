"""The shape of the code (issue 15): no module over 450 lines, and every top-level module or
package of ivr placed in a layer of the import contract (pyproject.toml), so lint-imports
checks its imports too."""

from __future__ import annotations

import re
import tomllib

from tests import REPO

MAX_LINES = 450
IVR = REPO / "ivr"


def test_no_module_over_450_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for p in IVR.rglob("*.py") if "_data" not in p.parts}
    assert sizes, "no modules found"
    over = {path: n for path, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"split these along a seam a reader would name (max {MAX_LINES} lines): {over}"


def _top_level_modules() -> set[str]:
    found = {f"ivr.{p.stem}" for p in IVR.glob("*.py") if p.stem != "__init__"}
    found |= {f"ivr.{p.name}" for p in IVR.iterdir()
              if p.is_dir() and (p / "__init__.py").exists() and not p.is_symlink()}
    return found


def _layered_modules() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    main = next(c for c in contracts if c["type"] == "layers")  # the four layers, first
    return {name.strip() for layer in main["layers"] for name in re.split(r"[:|]", layer) if name.strip()}


def test_every_top_level_module_is_in_a_layer():
    modules = _top_level_modules()
    assert {"ivr.config", "ivr.rules", "ivr.controller"} <= modules  # the scan sees modules and packages
    missing = sorted(modules - _layered_modules())
    assert not missing, f"add to a layer of [tool.importlinter] in pyproject.toml: {missing}"


def test_the_layers_name_no_module_that_is_gone():
    gone = sorted(_layered_modules() - _top_level_modules())
    assert not gone, f"in the import contract but not in ivr/: {gone}"
