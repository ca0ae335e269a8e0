"""A scripted Exchange server for the tests that need a server to misbehave on purpose: it speaks TLS
with the lab certificate, reads each request head, and answers with whatever the test's script returns
for it. It records every head it received and whether the balancer closed the connection."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from casarray.lab.pki import CertFiles

# (request head, index of this request on its connection) -> what to send: bytes, or a float (seconds to
# wait before the next piece); None closes the connection without an answer.
Script = Callable[[bytes, int], list[bytes | float] | None]


@dataclass
class ScriptedServer:
    pki: CertFiles
    script: Script
    host: str = "127.0.0.5"
    heads: list[bytes] = field(default_factory=list)
    closed_by_peer: int = 0  # connections the balancer closed (EOF seen while waiting for a request)
    port: int = 0

    def __post_init__(self) -> None:
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(self.pki.certificate, self.pki.key)
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def servers_yaml(self, name: str = "SCRIPTED") -> str:
        return f"  - {{name: {name}, address: {self.host}, port: {self.port}}}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        buf = b""
        index = 0
        deadline = time.monotonic() + 30  # bounded: no connection outlives the test
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        with self._lock:
                            self.closed_by_peer += 1
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self._lock:
                    self.heads.append(head)
                answer = self.script(head, index)
                index += 1
                if answer is None:
                    return
                for piece in answer:
                    if isinstance(piece, float):
                        time.sleep(piece)
                    else:
                        conn.sendall(piece)
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
