"""Clients of the embedded server poll it for its state; none holds a streamed `hello` open."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pymongo
from pymongo import monitoring, uri_parser

from orchestrator.stack import Stack, running_embedded_mongo

WATCH_SECONDS = 1.5  # a streaming monitor sends its first awaited hello right after its first


class _Heartbeats(monitoring.ServerHeartbeatListener):
    def __init__(self) -> None:
        self.awaited: list[bool] = []
        self.answered = 0

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        self.awaited.append(event.awaited)

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.answered += 1

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        pass


def _monitor_sends_no_awaited_hello(url: str) -> None:
    beats = _Heartbeats()
    client: pymongo.MongoClient = pymongo.MongoClient(url, event_listeners=[beats])
    try:
        client.admin.command("ping")
        time.sleep(WATCH_SECONDS)
    finally:
        client.close()
    assert beats.answered, "the monitor never checked the server"
    assert not any(beats.awaited), f"a streamed hello was held open: {beats.awaited}"


def test_a_client_of_the_embedded_server_polls_instead_of_streaming(stack: Stack) -> None:
    assert stack.settings.mongo_url
    _monitor_sends_no_awaited_hello(stack.settings.mongo_url)


def test_a_command_sharing_a_running_embedded_server_polls_too(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.settings.mongo_url
    [(_host, port)] = uri_parser.parse_uri(stack.settings.mongo_url)["nodelist"]
    data_dir = tmp_path / "mongo"
    (tmp_path / "mongo.pid").write_text(f"{os.getpid()} {port}\n")
    shared = running_embedded_mongo(data_dir)
    assert shared
    _monitor_sends_no_awaited_hello(shared)
