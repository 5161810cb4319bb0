"""A loopback TCP proxy whose forwarding can be frozen: a network stall without a close.

`freeze()` stops moving bytes (and accepting connections) in both directions while every
connection stays open, as a partition or a stuck switch would; `thaw()` resumes, and the
bytes sent meanwhile are delivered then. One thread moves every connection's bytes.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

POLL_SECONDS = 0.02
CONNECT_TIMEOUT_SECONDS = 5.0
CHUNK = 64 * 1024


class TcpProxy:
    """Forward 127.0.0.1:<port> to `target_host:target_port` until closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._peers: dict[socket.socket, socket.socket] = {}
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while the loop is not moving bytes (frozen)
        self.bytes_forwarded = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy")

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def freeze(self) -> None:
        """Stop forwarding now; returns once no byte is in the middle of being moved."""
        self._idle.clear()
        self._frozen.set()
        self._idle.wait(timeout=5)

    def thaw(self) -> None:
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._peers]:
            with contextlib.suppress(OSError):
                sock.close()

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is not None:
                self._peers.pop(s, None)
                with contextlib.suppress(OSError):
                    s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._frozen.is_set():
                self._idle.set()
                time.sleep(POLL_SECONDS)
                continue
            readable, _, _ = select.select([self._listener, *self._peers], [], [], POLL_SECONDS)
            for sock in readable:
                if self._frozen.is_set():
                    break  # frozen mid-round: leave the rest in the kernel's buffers
                if sock is self._listener:
                    self._accept()
                    continue
                if sock not in self._peers:
                    continue  # its pair was dropped earlier in this round
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                    continue
                try:
                    self._peers[sock].sendall(data)
                    self.bytes_forwarded += len(data)
                except OSError:
                    self._drop(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_SECONDS)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client
