"""ARCHITECTURE.md as a newcomer uses it (issue 15): every module of ivr is on its map, so
one can be found from the document before reading the code."""

from __future__ import annotations

from tests import REPO

IVR = REPO / "ivr"


def _map_rows() -> list[tuple[str, str]]:
    """The rows of ARCHITECTURE.md's "Map": (where, what is in it)."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("\n## Map\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(where.strip(), what.strip()) for where, what in rows]


def test_every_module_is_on_the_map():
    """A newcomer finds every module from ARCHITECTURE.md: a top-level module by its file in
    the first column of the map, a package's module by its name in its package's row."""
    rows = _map_rows()
    assert len(rows) > 10, "ARCHITECTURE.md has no map"
    missing = []
    for path in sorted(IVR.rglob("*.py")):
        rel = path.relative_to(IVR)
        if "_data" in rel.parts or path.stem == "__init__":
            continue
        if len(rel.parts) == 1:
            found = any(f"`{rel.name}`" in where for where, _ in rows)
        else:
            package = f"`{rel.parts[0]}/`"
            found = any(package in where and f"`{path.stem}`" in what for where, what in rows)
        if not found:
            missing.append(str(rel))
    assert not missing, f"name these in ARCHITECTURE.md's map (a module in its package's row): {missing}"
