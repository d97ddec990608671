"""A loopback TCP proxy for fault tests: added latency, a black hole, or refused connections.

Put it between the gateway and PostgreSQL (`--database-url` at the proxy's port) and change
its behaviour while the gateway runs:

- `latency_s`: every chunk is held this long before it is forwarded (both directions);
- `blackhole()`: open connections stop forwarding and new ones are accepted but never served,
  as when the database host vanishes without a reset;
- `refuse()`: every connection is closed at once (the database is down);
- `heal()`: normal service again (connections broken meanwhile stay broken).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.latency_s = 0.0
        self.mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, pg_url: str) -> str:
        """`pg_url` (a postgresql://user@127.0.0.1:PORT/db URL) pointed at the proxy instead."""
        head, _, rest = pg_url.partition("@")
        _, _, tail = rest.partition("/")
        return f"{head}@127.0.0.1:{self.port}/{tail}"

    # ------------------------------------------------------------- faults

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def refuse(self) -> None:
        self.mode = "refuse"
        self.drop_all()

    def heal(self) -> None:
        self.latency_s = 0.0
        self.mode = "pass"

    def drop_all(self) -> None:
        """Close every proxied connection (each side sees its peer go away)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self.drop_all()
        self._listener.close()

    # ------------------------------------------------------------- plumbing

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "blackhole" and not self._closed:
                    time.sleep(0.05)  # held, never forwarded while the hole lasts
                if self.latency_s:
                    time.sleep(self.latency_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
