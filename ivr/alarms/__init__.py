"""Where ring alarms go: AMI UserEvent, structlog JSON line, HTTP webhook, metrics."""

from ivr.alarms.sinks import AlarmSink, AmiUserEventSink, LogSink, RingAlarmNotice, WebhookSink

__all__ = ["AlarmSink", "AmiUserEventSink", "LogSink", "RingAlarmNotice", "WebhookSink"]
