"""The controller's side of the Asterisk Manager Interface (AMI)."""

from ivr.ami.connection import (
    AmiActionError,
    AmiConnection,
    AmiConnectionLost,
    AmiError,
    AmiNotConnected,
    AmiNotLeader,
    AmiTimeout,
    AmiUnsafeValue,
    check_action,
)

__all__ = [
    "AmiActionError",
    "AmiConnection",
    "AmiConnectionLost",
    "AmiError",
    "AmiNotConnected",
    "AmiNotLeader",
    "AmiTimeout",
    "AmiUnsafeValue",
    "check_action",
]
