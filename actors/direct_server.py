"""A shard actor's direct data plane: the same typed operations as its Ray `execute`, served on a
Unix socket (callers on the same node) and on TCP at the node's address (callers elsewhere).

The server runs an asyncio loop on its own thread inside the (sync) shard actor process. It accepts
only clients that prove they hold the secret handed out through Ray (actors/wire.py). Requests
from every connection queue up; each turn of the loop runs everything queued for one shard in one
`execute` (one group commit), so concurrent connections coalesce as a single caller's calls do.
`rotate()` (the shard was released back to the pool) changes the secret and drops every
connection: a client holding the old one must ask Ray again and learns what the actor serves now.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
import threading
import time
from typing import Any, Awaitable, Callable

from engine import operations as ops
from engine.errors import EngineError

from . import wire

Execute = Callable[[list[ops.ShardOperation], tuple[str, int] | None], list[ops.Reply]]
_Queued = tuple[asyncio.StreamWriter, int, bytes]
START_TIMEOUT_S = 10.0


class _Listener(abc.ABC):
    """Authenticated listeners (Unix socket, and TCP on the node's address) handing each request
    frame to `_received`; `rotate()` changes the secret and drops every connection."""

    def __init__(self) -> None:
        self._secret = wire.new_secret()
        self._generation = os.urandom(8).hex()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._addresses: tuple[str | None, str | None, int | None] = (None, None, None)
        self._node_id: str | None = None
        self._handshakes = 0
        self._last_active = time.monotonic()
        self.requests_served = 0

    def endpoint(self) -> wire.Endpoint:
        unix_address, host, port = self._addresses
        return wire.Endpoint(self._node_id, unix_address, host, port, self._secret, self._generation, self.idle_s())

    def idle_s(self) -> float:
        """Seconds since the server last had work (0 while it has some)."""
        return 0.0 if self._working() else time.monotonic() - self._last_active

    def _working(self) -> bool:
        return False

    def _touch(self) -> None:
        self._last_active = time.monotonic()

    def rotate(self) -> None:
        """A new secret and generation; every open connection is closed (thread-safe)."""
        self._secret = wire.new_secret()
        self._generation = os.urandom(8).hex()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drop_connections)

    def _drop_connections(self) -> None:
        for writer in list(self._connections):
            writer.close()
        self._connections.clear()

    async def _listen(self, host: str | None, node_id: str | None) -> None:
        self._loop, self._node_id = asyncio.get_running_loop(), node_id
        unix_address = _unix_address()
        await asyncio.start_unix_server(self._serve, path=unix_address)
        port = None
        if host:
            server = await asyncio.start_server(self._serve, host=host, port=0)
            port = server.sockets[0].getsockname()[1]
        self._addresses = (unix_address, host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire.tune_tcp(writer.get_extra_info("socket"))
        if self._handshakes >= wire.MAX_HANDSHAKES:
            writer.close()  # a flood of connections that never authenticate holds nothing here
            return
        try:
            self._handshakes += 1
            try:
                authenticated = await self._authenticate(reader, writer)
            finally:
                self._handshakes -= 1
            if not authenticated:
                return
            self._connections.add(writer)
            while not writer.is_closing():
                request_id, body = await wire.read_frame(reader, self._touch)
                self._received(writer, request_id, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, OSError):
            pass  # the client went away, sent garbage or failed the handshake: drop it
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonce = wire.new_nonce()
        secret = self._secret
        writer.write(wire.MAGIC + nonce)
        answer = await asyncio.wait_for(reader.readexactly(wire.PROOF_BYTES + wire.NONCE_BYTES),
                                        wire.HANDSHAKE_TIMEOUT_S)
        client_proof, client_nonce = answer[:wire.PROOF_BYTES], answer[wire.PROOF_BYTES:]
        if secret is not self._secret or not wire.accepts(secret, nonce, client_proof):
            return False  # a wrong secret, or one rotated during the handshake
        writer.write(wire.ACCEPTED + wire.proof(secret, nonce + client_nonce, wire.SERVER_ROLE))
        return True

    @abc.abstractmethod
    def _received(self, writer: asyncio.StreamWriter, request_id: int, body: bytes) -> None:
        """Take one request frame (each server answers requests its own way)."""


class DirectServer(_Listener):
    """Serve a sync shard actor's `execute(operations, shard_key)` from a thread of its own.

    Example:
        >>> server = DirectServer(actor.execute); endpoint = server.start("10.0.0.5", node_id)
        >>> server.rotate()   # released: old secret and connections are gone
    """

    def __init__(self, execute: Execute) -> None:
        super().__init__()
        self._execute = execute
        self._executing = False
        self._queue: list[_Queued] = []
        self._wake: asyncio.Event | None = None

    def start(self, host: str | None, node_id: str | None) -> wire.Endpoint:
        """Start listening (Unix socket, and TCP on `host` when given); returns the endpoint."""
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(target=self._run, args=(host, node_id, ready, failure), name="direct-data-plane",
                                  daemon=True)
        thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the direct data plane did not start listening in time")
        if failure:
            raise failure[0]
        return self.endpoint()

    def _run(self, host: str | None, node_id: str | None, ready: threading.Event,
             failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen(host, node_id))
            self._wake = asyncio.Event()
            loop.create_task(self._execute_loop())
        except BaseException as exc:  # reported to start(), which raises it in the actor's thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()

    def _working(self) -> bool:
        return self._executing or bool(self._queue)

    def _received(self, writer: asyncio.StreamWriter, request_id: int, body: bytes) -> None:
        self._queue.append((writer, request_id, body))
        assert self._wake is not None
        self._wake.set()

    async def _execute_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let connections with data ready queue their frames: one commit
            queued, self._queue = self._queue, []
            self._executing = True  # decoding counts as work too
            try:
                for group in _by_shard(queued):
                    self._run_group(group)
            finally:
                self._executing, self._last_active = False, time.monotonic()

    def _run_group(self, group: list[tuple[asyncio.StreamWriter, int, Any, list[ops.ShardOperation]]]) -> None:
        """One `execute` for every queued request of one shard key; each gets its own replies."""
        operations = [operation for _, _, _, batch in group for operation in batch]
        try:
            replies = self._execute(operations, group[0][2])
            outcome: Any = None
        except Exception as exc:  # delivered to every caller of the batch, as Ray delivers it
            outcome = exc
        self.requests_served += len(group)
        position = 0
        for writer, request_id, _, batch in group:
            if outcome is None:
                body: Any = (True, replies[position:position + len(batch)])
            else:
                body = (False, outcome)
            position += len(batch)
            if not writer.is_closing():
                writer.write(_reply_frame(request_id, body))


class CallServer(_Listener):
    """Serve an async actor's `handle(*arguments)` on the actor's own event loop (the router's
    fan-out): each request runs as a task, and its reply goes out when it finishes."""

    def __init__(self, handle: Callable[..., Awaitable[Any]]) -> None:
        super().__init__()
        self._handle = handle
        self._running: set[asyncio.Future[None]] = set()

    async def start(self, host: str | None, node_id: str | None) -> wire.Endpoint:
        await self._listen(host, node_id)
        return self.endpoint()

    def _working(self) -> bool:
        return bool(self._running)

    def _received(self, writer: asyncio.StreamWriter, request_id: int, body: bytes) -> None:
        task = asyncio.ensure_future(self._answer(writer, request_id, body))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, body: bytes) -> None:
        try:
            reply: Any = (True, await self._handle(*wire.decode(body)))
        except Exception as exc:  # delivered to the caller, as Ray delivers an actor's error
            reply = (False, exc)
        self.requests_served += 1
        self._last_active = time.monotonic()
        if not writer.is_closing():
            writer.write(_reply_frame(request_id, reply))


def node_address() -> str | None:
    """The address this node is reached at (TCP listeners bind it, not 0.0.0.0); None outside Ray."""
    try:
        import ray
        return str(ray.util.get_node_ip_address()) if ray.is_initialized() else None
    except Exception:  # outside Ray: Unix socket only
        return None


def _by_shard(queued: list[_Queued]) -> list[list[tuple[asyncio.StreamWriter, int, Any, list[Any]]]]:
    """Decode queued frames and group consecutive requests for the same shard key (order kept).
    A frame that does not decode is answered with its error at once, alone."""
    groups: list[list[tuple[asyncio.StreamWriter, int, Any, list[Any]]]] = []
    for writer, request_id, body in queued:
        try:
            shard_key, operations = wire.decode(body)
            shard_key = tuple(shard_key) if shard_key is not None else None
            operations = list(operations)
        except Exception as exc:  # an undecodable request fails alone
            if not writer.is_closing():
                writer.write(_reply_frame(request_id, (False, EngineError(f"undecodable request: {type(exc).__name__}"))))
            continue
        if groups and groups[-1][0][2] == shard_key:
            groups[-1].append((writer, request_id, shard_key, operations))
        else:
            groups.append([(writer, request_id, shard_key, operations)])
    return groups


def _reply_frame(request_id: int, body: Any) -> bytes:
    """The reply's frame; a value or error that does not pickle is answered as an EngineError
    naming it (the loop must never die on one reply)."""
    try:
        frame = wire.encode(request_id, body)
    except Exception as exc:  # an unpicklable reply fails its own caller only
        return wire.encode(request_id, (False, EngineError(f"reply could not be sent: {type(exc).__name__}: {exc}")))
    if len(frame) - wire.HEADER.size > wire.MAX_FRAME_BYTES:
        return wire.encode(request_id, (False, wire.TooLargeForDirect(f"reply of {len(frame)} bytes")))
    return frame


def _unix_address() -> str:
    """An abstract-namespace socket on Linux (no file to leave behind when the process is killed);
    elsewhere a file in a private temporary directory."""
    name = f"ffchat-shard-{os.getpid()}-{os.urandom(6).hex()}"
    if sys.platform.startswith("linux"):
        return "\0" + name
    import tempfile
    return os.path.join(tempfile.mkdtemp(prefix="ffchat-"), "shard.sock")
