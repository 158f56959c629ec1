"""moto's S3 server in a child process (``ThreadedMotoServer`` there), for tests and the bench.

Not a thread of the test process: a library call that waits on S3 while holding the GIL would
stop the server it is waiting for. The child process is as cheap and cannot deadlock that way.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
from collections.abc import Iterator
from typing import Any


def _serve(port: Any, ready: Any, stop: Any) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # port 0: the server binds a port the system gives it. A free port chosen by the parent and bound here a
    # second later could be taken meanwhile, and then the server never started (60 s, then every S3 test erred)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port.value = server.get_host_and_port()[1]
    ready.set()
    stop.wait()
    server.stop()


@contextlib.contextmanager
def silent_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """The URL of an endpoint that takes connections and never answers (an overloaded or hung S3
    gateway), and the connections it took so far: a client opens a new one for each try."""
    taken: list[socket.socket] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(0.1)
        done = threading.Event()

        def take() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    taken.append(s.accept()[0])

        taker = threading.Thread(target=take, name="silent-endpoint", daemon=True)
        taker.start()
        try:
            yield f"http://127.0.0.1:{s.getsockname()[1]}", taken
        finally:
            done.set()
            taker.join()
            for connection in taken:
                connection.close()


class MotoProcess:
    """``start()`` -> endpoint URL; ``stop()`` ends the child process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._port, self._ready, self._stop = ctx.Value("i", 0), ctx.Event(), ctx.Event()
        self._process = ctx.Process(target=_serve, args=(self._port, self._ready, self._stop), daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on, once started."""
        return int(self._port.value)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        self._process.start()
        if not self._ready.wait(timeout):
            self._process.kill()
            raise RuntimeError(f"moto server did not start within {timeout}s")
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def options(endpoint: str) -> dict[str, str]:
    """Storage options (delta-rs keys) reaching the moto server with its dummy credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
