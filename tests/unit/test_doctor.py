"""The doctor's least-privilege list matches what the controller really sends."""

from __future__ import annotations

import re
from pathlib import Path

import ivr
from ivr.doctor import DANGEROUS_ACTIONS, NEEDED_ACTIONS, Check

SESSION_ACTIONS = {"Login", "Logoff", "ListCommands"}


def test_needed_actions_cover_every_action_the_package_sends():
    package = Path(ivr.__file__).parent
    sent = set()
    for path in package.rglob("*.py"):
        sent |= set(re.findall(r'"Action":\s*"([A-Za-z]+)"', path.read_text()))
    assert sent - SESSION_ACTIONS <= NEEDED_ACTIONS, sent - SESSION_ACTIONS - NEEDED_ACTIONS
    assert not NEEDED_ACTIONS & DANGEROUS_ACTIONS


def test_check_lines_are_readable():
    assert Check("AMI login", True, "ivr@127.0.0.1:5038").line() == "[ok] AMI login: ivr@127.0.0.1:5038"
    assert Check("tone zone", False, "x").line().startswith("[FAIL] tone zone")
