from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# The source checkout (the tests run from it; installed code uses ivr.resources).
REPO = Path(__file__).resolve().parent.parent


def present(value: T | None, what: str = "a value") -> T:
    """``value``, which the test expects to be there (fails the test if it is None)."""
    assert value is not None, f"expected {what}, got None"
    return value
