"""Issue 13 (2a): no CR, LF or NUL in any AMI action header, checked where actions are
written (``AmiConnection.action`` and the login); an unsafe action is refused whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ivr.ami import AmiConnection, AmiError, AmiUnsafeValue, check_action
from ivr.ami.connection import Backoff
from ivr.ami.testing import FakeAmi
from tests.fakes import until

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0)


@pytest.fixture
async def fake():
    async with FakeAmi(secret="s3cret") as ami:
        yield ami


@pytest.fixture
async def conn(fake):
    c = AmiConnection("127.0.0.1", fake.port, "ivr", "s3cret", backoff=FAST)
    await c.start()
    await c.wait_connected(2)
    yield c
    await c.close()


async def test_originate_with_injected_callerid_is_refused_and_nothing_is_sent(fake, conn):
    evil = "13800\r\nAction: Hangup\r\nChannel: PJSIP/agent-00000001\r\n"
    with capture_logs() as logs, pytest.raises(AmiUnsafeValue, match="header CallerID refused") as err:
        await conn.action({"Action": "Originate", "Channel": "Local/900@ivr-transfer-number",
                           "CallerID": evil, "Application": "Wait", "Data": "1"}, 2)
    assert isinstance(err.value, AmiError) and err.value.details["header"] == "CallerID"
    assert "Hangup" not in str(err.value) and "13800" not in str(err.value)  # the value is never echoed
    [line] = [e for e in logs if e["event"] == "ami.unsafe_value"]
    assert line["action"] == "Originate" and line["header"] == "CallerID"
    await conn.action({"Action": "Ping"}, 2)  # a round trip: anything sent before it has arrived
    assert [a["Action"] for a in fake.actions] == ["Login", "Ping"]


@pytest.mark.parametrize("fields", [
    {"Channel": "PJSIP/1\nAction: Hangup"},
    {"Channel": "PJSIP/1\rX"},
    {"Channel": "PJSIP/1\x00"},
    {"Variable": ["IVR_A=1", "IVR_B=2\r\nAction: Hangup"]},  # a repeated header, one bad element
    {"Bad\r\nAction: Hangup": "x"},  # the header name
    {"Bad: name": "x"},
    {"": "x"},
    {"Data": None},
])
async def test_every_header_is_checked(fake, conn, fields):
    with pytest.raises(AmiUnsafeValue):
        await conn.action({"Action": "Setvar", **fields}, 2)
    await conn.action({"Action": "Ping"}, 2)
    assert fake.count("Setvar") == 0 and fake.count("Hangup") == 0


async def test_clean_values_go_through(fake, conn):
    await conn.action({"Action": "Setvar", "Variable": "IVR_X", "Value": "a b: c;d,e 中文", "ActionID": "1"}, 2)
    assert fake.count("Setvar") == 1


async def test_login_secret_with_a_line_break_is_never_sent(fake):
    c = AmiConnection("127.0.0.1", fake.port, "ivr", "s3cret\r\nAction: Originate", backoff=FAST)
    with capture_logs() as logs:
        await c.start()
        await until(lambda: any(e["event"] == "ami.connect_failed" for e in logs), 2, "the refusal reported")
        await c.close()
    assert fake.actions == []
    assert any(e["event"] == "ami.unsafe_value" and e["header"] == "Secret" for e in logs)
    assert not any("Originate" in str(e) for e in logs)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=5))
def test_check_action_is_total(fields):
    """Any header set is either accepted with no CR/LF/NUL anywhere, or refused."""
    try:
        check_action(fields)
    except AmiUnsafeValue:
        return
    for k, v in fields.items():
        assert not any(c in k + v for c in "\r\n\x00")
