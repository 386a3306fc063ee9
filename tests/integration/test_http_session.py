"""The requests sessions of the identity clients close their connections when told to."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from mailbox_worker.tokens.oauth_sessions import close_session, new_session

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


class KeepAliveServer:
    """Answers one request, keeps the connection open, and records when the client closes it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.closed_by_client = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            connection.sendall(ANSWER)
            connection.settimeout(10)
            try:
                if connection.recv(1) == b"":
                    self.closed_by_client.set()
            except TimeoutError:
                pass

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=15)


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    running = KeepAliveServer()
    try:
        yield running
    finally:
        running.close()


def test_close_session_closes_idle_pooled_connections_at_once(server: KeepAliveServer) -> None:
    session = new_session(None)
    # The answer stays referenced, as msal's HTTP cache and callers keep theirs; it holds
    # its connection pool, which plain Session.close() then leaves open until collected.
    answer = session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert answer.text == "ok"
    assert not server.closed_by_client.wait(0.2)  # pooled, kept alive
    close_session(session)
    assert server.closed_by_client.wait(5)


def test_new_session_ignores_the_environment_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    session = new_session("/etc/our-ca.pem")
    try:
        settings = session.merge_environment_settings("https://x.example/", {}, None, None, None)
        assert settings["verify"] == "/etc/our-ca.pem"
    finally:
        close_session(session)
