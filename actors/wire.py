"""The direct data plane's wire format: an authenticated handshake, then length-prefixed frames.

Handshake (bounded, nothing is unpickled before it succeeds):
    server -> client   MAGIC (8 bytes) + nonce (32 random bytes)
    client -> server   HMAC-SHA256(secret, MAGIC + nonce) (32 bytes)
    server -> client   ACCEPTED (1 byte), or the connection closes
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
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"FFCHAT01"
NONCE_BYTES = 32
SECRET_BYTES = 32
ACCEPTED = b"\x01"
HEADER = struct.Struct(">IQ")
# A frame carries at most one batch: 64 MiB of content per batch (engine.storable) plus encoding.
MAX_FRAME_BYTES = 256 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
PICKLE_PROTOCOL = 5


class FrameTooLarge(ConnectionError):
    """A frame's header announced more than MAX_FRAME_BYTES: the connection is dropped."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach one shard actor's data plane (handed out through Ray).

    `generation` names the server incarnation the secret belongs to: a client that sees another
    generation knows the actor restarted or was re-pooled.
    """

    node_id: str | None
    unix_address: str | None
    host: str | None
    port: int | None
    secret: bytes
    generation: str


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def proof(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, MAGIC + nonce, hashlib.sha256).digest()


def accepts(secret: bytes, nonce: bytes, answer: bytes) -> bool:
    return hmac.compare_digest(proof(secret, nonce), answer)


def encode(request_id: int, body: Any) -> bytes:
    payload = pickle.dumps(body, protocol=PICKLE_PROTOCOL)
    return HEADER.pack(len(payload), request_id) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(request id, body bytes) of the next frame; IncompleteReadError at end of stream."""
    length, request_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {length} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    return request_id, await reader.readexactly(length)


def decode(body: bytes) -> Any:
    """Unpickle a frame body (only ever called on an authenticated connection)."""
    return pickle.loads(body)
