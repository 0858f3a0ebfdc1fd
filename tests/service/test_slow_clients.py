"""A floor on how fast clients send requests (ntk.api.slow_clients), on a real uvicorn server.

The server runs in a thread with a 0.5 s grace and a 1000 bytes/s floor. Each test asserts what the
client sees (an answer, or a connection closed without one), never how long it took.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from ntk.api.slow_clients import paced_protocol

GRACE_S, FLOOR = 0.5, 1000.0


async def echo_length(scope, receive, send):
    """An ASGI app answering the length of the request body."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server(free_tcp_port):
    port = free_tcp_port()
    config = uvicorn.Config(echo_length, host="127.0.0.1", port=port, http=paced_protocol(GRACE_S, FLOOR),
                            log_config=None, timeout_keep_alive=30)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    yield port
    instance.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(20)  # a safety net for a broken server, far beyond the grace
    return sock


def closed_without_answer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, data: bytes, pause_s: float) -> None:
    """Send one byte at a time, stopping quietly once the server has closed the connection."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return
        time.sleep(pause_s)


def test_a_request_at_full_speed_is_answered_and_its_connection_kept(server):
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)
            answer = sock.recv(1024)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"5000")


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        assert closed_without_answer(sock)


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    with connect(server) as sock:
        trickle(sock, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 200, pause_s=0.05)
        assert closed_without_answer(sock)


def test_a_body_below_the_floor_is_cut_off(server):
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n")
        trickle(sock, b"b" * 400, pause_s=0.05)  # 20 bytes/s against a floor of 1000
        assert closed_without_answer(sock)


def test_a_kept_alive_connection_gets_a_fresh_grace_per_request(server):
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        time.sleep(GRACE_S * 2)  # idle between requests: uvicorn's keep-alive rules that, not the floor
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
