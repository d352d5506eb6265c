"""The real redis-server the Celery executor's tests use: a restart keeps queued data, a kill is an outage."""

from __future__ import annotations

import socket


def rpush_then_llen(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"RPUSH kept one\r\nLLEN kept\r\n")
        reply = b""
        while reply.count(b"\r\n") < 2:
            reply += connection.recv(64)
        return reply


def llen(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"LLEN kept\r\n")
        return connection.recv(64)


def test_a_restart_keeps_what_was_queued_and_a_kill_is_an_outage_that_start_ends(redis_server):
    assert rpush_then_llen(redis_server.port) == b":1\r\n:1\r\n"
    redis_server.restart()
    assert llen(redis_server.port) == b":1\r\n"
    redis_server.kill()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.ping()
    assert llen(redis_server.port) == b":1\r\n"  # appendfsync always: nothing acknowledged is lost
