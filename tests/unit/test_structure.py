"""The shape of the code (issue 15): no module over 450 lines, every top-level module or
package of ivr placed in a layer of the import contract (pyproject.toml), so lint-imports
checks its imports too, and no sleep in the tests without a bound or a reason."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Collection

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


# -- every wait in the tests bounded and meaningful (issue 15) ------------------------------
REASONS = ("# pacing:", "# poll:")
WAIT_HELPERS = {"tests/fakes.py": {"until", "drain", "idle"}, "tests/integration/amitools.py": {"until"},
                "tests/unit/test_waits.py": {"turns"}}  # the tests of those waits: work of n loop turns
YIELD = re.compile(r"^\s*0*(\.0*)?\s*$")  # sleep(0): one turn of the loop


def unexplained_sleeps(text: str, helpers: Collection[str] = ()) -> list[tuple[int, str]]:
    """The sleeps in ``text`` (Python) that are neither in one of the ``helpers`` functions
    nor carry a reason on their line; every yield (``sleep(0)``) outside the helpers."""
    tree, lines = ast.parse(text), text.splitlines()
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in helpers:
            inside |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno in inside:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name != "sleep":
            continue
        line = lines[node.lineno - 1]
        arg = ast.get_source_segment(text, node.args[0]) if node.args else ""
        if YIELD.match(arg or "") or not any(reason in line for reason in REASONS):
            found.append((node.lineno, line.strip()))
    return found


def test_the_sleep_check_finds_what_it_must() -> None:
    code = ("import asyncio, time\n"
            "async def until(p):\n    await asyncio.sleep(0.01)\n"
            "async def t():\n    await asyncio.sleep(0.05)\n"  # 5: no reason
            "    await asyncio.sleep(2)  # pacing: two seconds of conversation\n"
            "    time.sleep(0.1)  # poll: the CLI socket, bounded\n"
            "    await asyncio.sleep(0)  # pacing: a yield is not pacing\n"  # 8
            "    route = lambda call: asyncio.sleep(0)\n")  # 9
    assert [n for n, _ in unexplained_sleeps(code, {"until"})] == [5, 8, 9]


def test_every_sleep_in_the_tests_is_bounded_and_says_why() -> None:
    """Issue 15: a test that sleeps and hopes cannot fail for the right reason. A sleep in
    tests/ is allowed in three places only:

    - inside the shared bounded waits (``until``, ``drain``, ``idle`` of tests/fakes.py;
      ``until`` of tests/integration/amitools.py), which poll with a limit and a message;
    - with ``# pacing: <what>`` on its line: scenario time (the moment of a kill, seconds
      of conversation to listen to, an RTP sender's clock, a fake peer's delay);
    - with ``# poll: <what>`` on its line: a poll of state that raises no event, in a loop
      with a limit and a failure message.

    A yield (``sleep(0)``) is neither: wait for the work itself (``drain`` a service's
    tasks, ``idle``, ``until`` a later marker), then assert."""
    found: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(p for p in (REPO / "tests").rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        name = str(path.relative_to(REPO))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if path.suffix == ".py":
            hits = unexplained_sleeps(text, WAIT_HELPERS.get(name, ()))
        else:  # scripts (tests/containers has Python inside bash)
            hits = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
                    if re.search(r"\bsleep\(", line) and not any(r in line for r in REASONS)]
        if hits:
            found[name] = hits
    assert not found, f"wait for the event or poll with until(); else say why (# pacing: / # poll:): {found}"
