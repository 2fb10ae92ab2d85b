"""What one HTTP listener lets a client hold: connections, time, header and body bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-listener limits. Defaults fit probes and scrapers on a node port.

    A client that reaches the connection cap does not lock others out: the oldest connection
    that is not being answered is closed to make room (an idle attacker's, in practice).
    """

    max_connections: int = 256
    # Seconds from the first byte of a request (or from accept) to its last byte: slow
    # senders (slowloris) are cut here.
    request_timeout: float = 10.0
    # Seconds a kept-alive connection may wait for its next request.
    idle_timeout: float = 15.0
    # Seconds a client may take to read an answer it asked for.
    write_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_body: int = 1 << 20
    # Threads that run the applications; requests beyond them wait in line (bounded by
    # max_connections, since a connection reads no further request while one is answered).
    workers: int = 4
    tls_handshake_timeout: float = 10.0
