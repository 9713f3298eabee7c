from pathlib import Path

# The source checkout (the tests run from it; installed code uses ivr.resources).
REPO = Path(__file__).resolve().parent.parent
