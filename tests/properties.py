"""Hypothesis profiles: deterministic in CI, a separate longer exploration on demand.

* ``ci`` (the default, what ``bash tests/run`` and CI use): ``derandomize = True``, so a
  run draws the same examples every time and CI cannot fail on a new random draw. Bugs
  found by exploring are kept as explicit ``@example(...)`` cases next to the property.
* ``explore`` (``bash tests/explore``): random draws, ``EXPLORE_FACTOR`` times the examples
  and a local example database (``.hypothesis/``), so a failure found once is replayed
  until fixed. Copy what it finds into an ``@example`` before committing the fix.

Property tests say how many examples they want with :func:`examples`, so that both
profiles scale from one number.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXPLORE_FACTOR = 50

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile(
    "explore", derandomize=False, deadline=None, print_blob=True,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
)
PROFILE = os.environ.get("IVR_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "explore"):
    raise RuntimeError(f"IVR_HYPOTHESIS_PROFILE must be 'ci' or 'explore', not {PROFILE!r}")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples in CI; ``EXPLORE_FACTOR`` times as many when exploring."""
    return n * EXPLORE_FACTOR if PROFILE == "explore" else n
