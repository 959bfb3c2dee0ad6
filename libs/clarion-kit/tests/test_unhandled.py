"""An unhandled exception becomes a 500 problem and leaves the connection usable."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clarion_kit.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RecursionError("secret internal state")

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_exception_is_answered_and_not_re_raised() -> None:
    # raise_server_exceptions=True: an exception reaching the server fails the test.
    with TestClient(_app(), raise_server_exceptions=True) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["detail"] == "an unexpected error occurred"
    assert "secret" not in r.text


@pytest.fixture
def server_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(_app(), log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _exchange(conn: socket.socket, path: str) -> bytes:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_keep_alive_connection_survives_a_500(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port), timeout=30) as conn:
        first = _exchange(conn, "/boom")
        assert first.startswith(b"HTTP/1.1 500"), first[:100]
        assert b"connection: close" not in first.lower()
        second = _exchange(conn, "/ok")
        assert second.startswith(b"HTTP/1.1 200"), "the same connection answers the next request"
        assert second.endswith(b'{"ok":true}')
