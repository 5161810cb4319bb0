"""One deadline over a whole HTTP exchange: connect, request, status line, headers, body.

requests' and urllib3's timeouts bound each socket operation, not the exchange: a server
that sends its status line or headers a byte at a time, each byte within the read
timeout, keeps a request (and the thread waiting on it) alive for as long as it likes.

`DeadlineAdapter` mounts connections whose every send and receive waits no longer than
what is left of the deadline the calling thread set with `within(seconds)`. The response
reads the socket through `_DeadlineReader` from its first byte (the status line) to its
last, on plain and TLS sockets alike; nothing runs in another thread, so nothing leaks
and a blocked receive ends at the deadline at the latest. Outside `within`, the adapter
behaves like requests' own.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class Deadline:
    """The moment a whole exchange must end; `expired` once a wait was cut short by it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False

    def bound(self, timeout: float | None) -> tuple[float, bool]:
        """The wait allowed for one socket operation, and whether the deadline set it.

        Raises TimeoutError (marking the deadline expired) when nothing is left.
        """
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError(f"no whole answer within {self.seconds:g}s")
        if timeout is None or left < timeout:
            return left, True
        return timeout, False


def current() -> Deadline | None:
    """The deadline the calling thread's requests run under, if any."""
    return getattr(_local, "deadline", None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Run the calling thread's requests (connect to last byte) under one deadline."""
    previous = current()
    deadline = _local.deadline = Deadline(seconds)
    try:
        yield deadline
    finally:
        _local.deadline = previous


class _DeadlineReader(io.RawIOBase):
    """The response's socket reads, each bounded by the read timeout and the deadline."""

    def __init__(self, raw: Any, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._raw = raw  # the SocketIO http.client made: closing it releases the socket
        self._sock = sock
        self._deadline = deadline
        self._per_receive = sock.gettimeout()  # the read timeout urllib3 set
        self._timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._timed_out:
            # As socket.SocketIO: a timed-out stream may have lost data mid-read.
            raise OSError("cannot read from timed out object")
        try:
            wait, by_deadline = self._deadline.bound(self._per_receive)
        except TimeoutError:
            self._timed_out = True
            raise
        self._sock.settimeout(wait)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self._timed_out = True
            if by_deadline:
                self._deadline.expired = True
            raise
        except BlockingIOError:
            return None

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading through `_DeadlineReader` when a deadline is set."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        deadline = current()
        if deadline is not None:
            # Keep http.client's own file alive: discarded, it would close the socket stream
            # both read, and a `Connection: close` answer would lose its socket mid-body.
            self._socket_file = self.fp
            self.fp = io.BufferedReader(_DeadlineReader(self.fp.raw, sock, deadline))


class _SendBound:
    """Sends (the request line, headers, body) wait no longer than the deadline leaves."""

    sock: socket.socket | None
    timeout: Any
    auto_open: int

    def send(self, data: Any) -> None:
        deadline = current()
        if deadline is not None:
            if self.sock is None and self.auto_open:
                self.connect()  # type: ignore[attr-defined]
            if self.sock is not None:
                self.sock.settimeout(deadline.bound(self.timeout)[0])
        super().send(data)  # type: ignore[misc]


class _DeadlineHTTPConnection(_SendBound, urllib3.connection.HTTPConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPSConnection(_SendBound, urllib3.connection.HTTPSConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections honour `within` (see the module docstring)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def deadline_session(pool_size: int = 1) -> requests.Session:
    """A Session whose requests honour `within`; urllib3 never retries behind our back."""
    session = requests.Session()
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
