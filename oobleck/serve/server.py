"""Run an app on uvicorn: in the foreground (``oobleck serve``) or in a background thread.

The listening socket is bound here, before uvicorn starts, so port 0 picks a free port and
the caller learns the real address before the first request: ``oobleck serve`` prints it and
tests connect to it without guessing a port.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

__all__ = ["BackgroundServer", "bind", "run_server", "run_workers"]


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a colon)."""
    from oobleck.errors import ConfigurationError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do, and with
    # Nagle on, a response written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: Any, log_level: str, **options: Any) -> Any:
    import uvicorn

    from oobleck.serve.protocol import http_protocol

    # keep-alive well past a load balancer's idle timeout; the backlog covers bursts of connections.
    return uvicorn.Config(app, log_level=log_level, timeout_keep_alive=75, backlog=2048, lifespan="on", http=http_protocol(),
                          **options)  # fmt: skip


def run_server(app: Any, sock: socket.socket, *, log_level: str = "info", access_log: bool = False) -> None:
    """Serve ``app`` on ``sock`` until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    server = uvicorn.Server(_config(app, log_level, access_log=access_log))
    server.run(sockets=[sock])


def run_workers(factory: str, sock: socket.socket, workers: int, *, log_level: str = "info", access_log: bool = False) -> None:
    """Serve from ``workers`` processes sharing ``sock``, each building its app with ``factory``.

    ``factory`` is an import string (``"package.module:function"``) each worker calls, since an
    app cannot be handed to another process. One process's Python work is serialized by its
    GIL, so this is how a server uses more than one core; each worker loads its own programs
    and models, and ``/metrics`` reports the worker that answers the scrape.
    """
    from uvicorn.supervisors import Multiprocess

    config = _config(factory, log_level, access_log=access_log, factory=True, workers=workers)
    Multiprocess(config, sockets=[sock]).run()


class BackgroundServer:
    """``app`` on uvicorn in a daemon thread; for tests and notebooks.

        with BackgroundServer(create_app({"qa": program})) as server:
            httpx.post(server.url + "/programs/qa", json={...})
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        import time

        import uvicorn

        from oobleck.errors import ConfigurationError

        sock = bind(self.host, self.port)
        self.url = url_of(sock)
        self._server = uvicorn.Server(_config(self.app, self.log_level, access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="oobleck-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> BackgroundServer:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
