"""The direct data plane's wire format: an authenticated handshake, then length-prefixed frames.

Handshake (bounded, mutual, nothing is unpickled before it succeeds):
    server -> client   MAGIC (8 bytes) + server nonce (32 random bytes)
    client -> server   HMAC-SHA256(secret, "client" + MAGIC + server nonce) + client nonce (32 + 32 bytes)
    server -> client   ACCEPTED (1 byte) + HMAC-SHA256(secret, "server" + MAGIC + both nonces), or it closes
The secret is handed out only through a Ray call to the shard actor (so only holders of Ray access
get it), never crosses the socket, and changes with every incarnation of the actor's server (a new
process, or a shard released back to the pool).

After the handshake each direction carries frames: a 12-byte header (body length, request id;
big-endian) and a pickled body. A request body is `(shard_key, operations)`; a reply body is
`(True, replies)` or `(False, exception)`. Requests on one connection are pipelined: any number in
flight, answered in order, matched by id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"FFCHAT01"
NONCE_BYTES = 32
PROOF_BYTES = 32
SECRET_BYTES = 32
ACCEPTED = b"\x01"
CLIENT_ROLE, SERVER_ROLE = b"client", b"server"
HEADER = struct.Struct(">IQ")
# A frame carries at most one batch: 64 MiB of content per batch (engine.storable) plus encoding.
MAX_FRAME_BYTES = 256 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 2.0
MAX_HANDSHAKES = 64  # connections not yet authenticated, per listener: more are closed at once
# TCP: probe an idle peer after 1 s, every 1 s, give up after 3 misses; abort a connection whose sent
# data stays unacknowledged 3 s (a dead node or a partition ends the connection, not the deadline).
TCP_KEEPALIVE_S = (1, 1, 3)
TCP_USER_TIMEOUT_MS = 3000
PICKLE_PROTOCOL = 5


class FrameTooLarge(ConnectionError):
    """A frame's header announced more than MAX_FRAME_BYTES: the connection is dropped."""


class TooLargeForDirect(Exception):
    """A request or reply over MAX_FRAME_BYTES: the caller sends that request over Ray instead (which
    carries large objects through its object store). Sent in place of a reply that is too large."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach one shard actor's data plane (handed out through Ray).

    `generation` names the server incarnation the secret belongs to: a client that sees another
    generation knows the actor restarted or was re-pooled. `idle_s`: how long the server has had
    nothing to do (0 while it runs or holds requests), so a client whose call is unanswered knows
    whether its request ever arrived.
    """

    node_id: str | None
    unix_address: str | None
    host: str | None
    port: int | None
    secret: bytes
    generation: str
    idle_s: float = 0.0


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def proof(secret: bytes, nonce: bytes, role: bytes = CLIENT_ROLE) -> bytes:
    return hmac.new(secret, role + MAGIC + nonce, hashlib.sha256).digest()


def accepts(secret: bytes, nonce: bytes, answer: bytes, role: bytes = CLIENT_ROLE) -> bool:
    return hmac.compare_digest(proof(secret, nonce, role), answer)


def tune_tcp(sock: socket.socket | None) -> None:
    """No Nagle delay; keepalive and a user timeout so a silently dead peer ends the connection."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), TCP_KEEPALIVE_S):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


def encode(request_id: int, body: Any) -> bytes:
    payload = pickle.dumps(body, protocol=PICKLE_PROTOCOL)
    return HEADER.pack(len(payload), request_id) + payload


async def read_frame(reader: asyncio.StreamReader, on_header: Any = None) -> tuple[int, bytes]:
    """(request id, body bytes) of the next frame; IncompleteReadError at end of stream.
    `on_header()` is called once a header has arrived (the server counts reading a body as work)."""
    length, request_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    if on_header is not None:
        on_header()
    if length > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {length} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    return request_id, await reader.readexactly(length)


def decode(body: bytes) -> Any:
    """Unpickle a frame body (only ever called on an authenticated connection)."""
    return pickle.loads(body)
