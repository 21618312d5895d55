"""Phase (e), attribution only: the engine exactly as in (c) except that call events are dropped instead of
published to JetStream (run it with VLB_LOG_LEVEL=warning so the per-call log line goes too). The
difference between (c) and (e) is what the event and the log line cost on the hot path; the engine's
routing code is untouched. Not a configuration to run: events are the CDR trail."""

from __future__ import annotations

from routing_engine.app import EngineApp
from routing_engine.app import create_app as create_engine_app
from routing_engine.events import EventPublisher
from shared.events import CallEvent


class DiscardingPublisher(EventPublisher):
    def publish(self, event: CallEvent) -> None:
        del event


def create_app() -> EngineApp:
    app = create_engine_app()
    settings = app.settings
    app.events = DiscardingPublisher(
        stream=settings.events_stream, subject_prefix=settings.events_subject_prefix, capacity=1
    )
    return app
