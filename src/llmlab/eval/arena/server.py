"""Running the arena app with uvicorn: in the foreground until Ctrl-C, or on a background thread.

The socket is bound here, before uvicorn starts, so port 0 (any free port) is resolved and the URL is
known up front. The default host is 127.0.0.1: the page has no login, so it stays on this machine unless
the caller binds another address on purpose.
"""

import socket
import threading
import time

import uvicorn

from llmlab.common import log


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: a free one, read back with getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({e.strerror}); choose another port, or 0 for any") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve `app` until Ctrl-C, logging the URL first; Ctrl-C is the normal way out and returns."""
    sock = bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.info(f"arena: listening on {host}, reachable from other machines; anyone there can vote")
    log.info(f"arena: open {url_of(sock)}  (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then raises the signal again for the caller
        pass
    finally:
        sock.close()
    log.info("arena: stopped")


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves `app` on a thread until the block ends (tests, notebooks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0):
        self.app, self.host, self.port, self.timeout = app, host, port, timeout

    def __enter__(self) -> str:
        self.sock = bind(self.host, self.port)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the arena server did not start within {self.timeout} s")
            time.sleep(0.01)
        return url_of(self.sock)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
        self.sock.close()
