"""The client side of the direct data plane: how a bridge (or the router) reaches one shard actor.

`ShardLink` sends a batch of typed operations over one pipelined, authenticated connection to the
actor's `DirectServer` (a Unix socket on the same node, TCP otherwise), set up through Ray: the
actor's `endpoint()` call hands out the address and the secret. One connection per (event loop,
actor incarnation) is shared by every link of the process. A connection that breaks fails its
calls with ConnectionLost (retried by the caller inside its deadline, with the same message ids);
the next call asks Ray for the endpoint again, which also waits for a restarted actor. A call that
waits long asks Ray whether the actor is still the same incarnation and busy, so a dead node, a
superseded instance or a silently dropped connection is noticed without waiting for TCP. When the
direct connection cannot be set up (or went silent), calls go over Ray actor calls
(`transport == "ray"`, with the reason) while setup is retried in the background, 1 s doubling to
30 s; a request or reply too large for a frame goes over Ray alone.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from typing import Any, Awaitable, Callable

from engine import operations as ops
from engine.errors import ConnectionLost, EngineError

from . import wire

CONNECT_TIMEOUT_S = 2.0
STALL_CHECK_S = 1.0      # a call unanswered this long makes the link check the actor's incarnation
RETRY_DIRECT_S = 1.0     # after a failed setup, calls go over Ray this long (doubling) before trying again
RETRY_DIRECT_MAX_S = 30.0
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024

_channels: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Channel]]" = weakref.WeakKeyDictionary()


class Channel:
    """One authenticated, pipelined connection to one actor's data plane."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, endpoint: wire.Endpoint,
                 kind: str) -> None:
        self.endpoint = endpoint
        self.kind = kind  # "unix" or "tcp"
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.error: ConnectionLost | None = None
        self._reader_task = asyncio.ensure_future(self._read_replies(reader))

    @classmethod
    async def connect(cls, endpoint: wire.Endpoint, same_node: bool, timeout_s: float) -> "Channel":
        """Connect and authenticate; raises OSError, asyncio.TimeoutError or ConnectionLost."""
        if same_node and endpoint.unix_address:
            kind, opening = "unix", asyncio.open_unix_connection(endpoint.unix_address)
        elif endpoint.host and endpoint.port:
            kind, opening = "tcp", asyncio.open_connection(endpoint.host, endpoint.port)
        else:
            raise ConnectionLost("the shard actor offers no address this process can reach")
        reader, writer = await asyncio.wait_for(opening, timeout_s)
        try:
            await asyncio.wait_for(_handshake(reader, writer, endpoint.secret), timeout_s)
        except BaseException:
            writer.close()
            raise
        if kind == "tcp":
            wire.tune_tcp(writer.get_extra_info("socket"))
        return cls(reader, writer, endpoint, kind)

    @property
    def closed(self) -> bool:
        return self.error is not None

    async def request(self, body: Any, still_current: Callable[[], Awaitable[bool]]) -> Any:
        """Send one request and wait for its answer; `still_current()` is asked whenever the answer
        takes longer than STALL_CHECK_S, and a False closes the channel (ConnectionLost)."""
        if self.error is not None:
            raise self.error
        request_id = next(self._ids)
        frame = wire.encode(request_id, body)
        if len(frame) - wire.HEADER.size > wire.MAX_FRAME_BYTES:
            raise wire.TooLargeForDirect(f"request of {len(frame)} bytes")  # the caller uses Ray for it
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(frame)
            if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH_BYTES:
                await self._writer.drain()
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(future), STALL_CHECK_S)
                except asyncio.TimeoutError:
                    if not future.done() and not await still_current():
                        self.close(ConnectionLost("a direct call went unanswered: the actor restarted, was "
                                                  "replaced, or the connection went silent"))
        except ConnectionError as exc:
            if isinstance(exc, ConnectionLost):
                raise
            self.close(ConnectionLost(f"direct connection failed: {type(exc).__name__}"))
            raise self.error from None  # type: ignore[misc]
        finally:
            self._pending.pop(request_id, None)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, body = await wire.read_frame(reader)
                future = self._pending.pop(request_id, None)
                if future is None or future.done():
                    continue  # its caller gave up (deadline): the answer is dropped
                _deliver(future, body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close(ConnectionLost(f"direct connection to the shard closed ({type(exc).__name__})"))
        except asyncio.CancelledError:
            self.close(ConnectionLost("direct connection closed"))
        except Exception as exc:  # never leave the channel open with nobody reading it
            self.close(ConnectionLost(f"direct connection failed while reading: {type(exc).__name__}"))

    def close(self, error: ConnectionLost) -> None:
        """Fail every pending call with `error`; later calls raise it too."""
        if self.error is None:
            self.error = error
            self._writer.close()
            _forget(self)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self.error)
        self._pending.clear()


def _deliver(future: "asyncio.Future[Any]", body: bytes) -> None:
    """Resolve a call with its reply; a reply that cannot be read fails that call alone."""
    try:
        succeeded, value = wire.decode(body)
    except Exception as exc:  # e.g. an error type that pickles on the server but not back here
        future.set_exception(EngineError(f"the shard's reply could not be read: {type(exc).__name__}: {exc}"))
        return
    if not succeeded and not isinstance(value, BaseException):
        value = EngineError(f"the shard answered with a malformed error: {type(value).__name__}")
    if succeeded:
        future.set_result(value)
    else:
        future.set_exception(value)


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes) -> None:
    """Prove we hold the secret, and check that the server does too (mutual: a process that took
    over the address cannot feed us replies)."""
    try:
        greeting = await reader.readexactly(len(wire.MAGIC) + wire.NONCE_BYTES)
    except asyncio.IncompleteReadError:
        raise ConnectionLost("the listener closed before greeting (too many connections, or the actor went away)"
                             ) from None
    if not greeting.startswith(wire.MAGIC):
        raise ConnectionLost("the address does not serve a shard data plane")
    server_nonce, client_nonce = greeting[len(wire.MAGIC):], wire.new_nonce()
    writer.write(wire.proof(secret, server_nonce) + client_nonce)
    try:
        answer = await reader.readexactly(len(wire.ACCEPTED) + wire.PROOF_BYTES)
    except asyncio.IncompleteReadError:
        raise ConnectionLost("the shard refused the secret (the actor restarted or was re-pooled)") from None
    if not answer.startswith(wire.ACCEPTED) or \
            not wire.accepts(secret, server_nonce + client_nonce, answer[len(wire.ACCEPTED):], wire.SERVER_ROLE):
        raise ConnectionLost("the server at the shard's address did not prove it holds the secret")


def _forget(channel: Channel) -> None:
    for known in _channels.values():
        if known.get(channel.endpoint.generation) is channel:
            del known[channel.endpoint.generation]


def _local_node_id() -> str | None:
    try:
        import ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # outside Ray: no node, so only TCP endpoints could be used
        return None


class _Link:
    """One holder's way to one actor's direct listener: set up through Ray, shared per (loop,
    incarnation), re-established after a break, given up for a while (Ray calls instead, with the
    reason in `fallback_reason`) when it cannot be set up or goes silent."""

    def __init__(self, handle: Any, direct: bool) -> None:
        self.handle = handle
        self.direct = direct
        self.fallback_reason: str | None = None  # why calls go over Ray although `direct` is on
        self._channel: Channel | None = None
        self._failures = 0
        self._retry_direct_at = 0.0
        self._setup: asyncio.Future[Channel | None] | None = None
        self._check: asyncio.Future[bool] | None = None
        self._ray_calls = 0
        self._ray_idle = asyncio.Event()

    @property
    def transport(self) -> str:
        """"unix" or "tcp" while a direct connection is up, else "ray"."""
        channel = self._channel
        return channel.kind if channel is not None and not channel.closed else "ray"

    async def prepare(self) -> None:
        """Set the direct connection up ahead of the first call (a failure is left for that call)."""
        if self.direct:
            try:
                await self._ready_channel()
            except Exception:  # the first call retries the setup and reports what fails
                pass

    def _endpoint_call(self) -> Any:
        """The Ray call that hands out the actor's endpoint (an awaitable)."""
        return self.handle.endpoint.remote()

    async def _request(self, body: Any, over_ray: bool) -> tuple[bool, Any]:
        """(True, answer) over the direct connection, or (False, None) when the caller must use Ray
        (off, down, or the request or its reply too large for a frame)."""
        channel = await self._ready_channel() if self.direct and not over_ray else None
        if channel is None:
            return False, None
        if self._ray_calls:
            # Back from Ray to the socket: the calls still on Ray go first, or a batch sent now could
            # be committed before an earlier one (each transport keeps its own order, not each other's).
            await self._ray_idle.wait()
            channel = await self._ready_channel()
            if channel is None:
                return False, None
        try:
            return True, await channel.request(body, self._still_current)
        except wire.TooLargeForDirect:
            return False, None

    async def _over_ray(self, call: Any) -> Any:
        """Await a Ray call, counted, so a switch back to the socket waits for it."""
        self._ray_calls += 1
        self._ray_idle.clear()
        try:
            return await call
        finally:
            self._ray_calls -= 1
            if not self._ray_calls:
                self._ray_idle.set()

    async def _ready_channel(self) -> Channel | None:
        """The channel to use, or None for a Ray call. While the direct path works (or was never
        tried) a missing channel is set up and waited for (after a restart: one Ray call and a
        connect); after it failed, calls go over Ray and setup is retried in the background with
        backoff, so no call waits on an address that does not answer."""
        channel = self._channel
        if channel is not None and not channel.closed:
            return channel
        if self.fallback_reason is None:
            if self._setup is None or self._setup.done():
                self._setup = asyncio.ensure_future(self._connect())
            return await asyncio.shield(self._setup)
        if time.monotonic() >= self._retry_direct_at and (self._setup is None or self._setup.done()):
            self._retry_direct_at = float("inf")  # one attempt at a time; _connect sets the next
            self._setup = asyncio.ensure_future(self._connect())
            self._setup.add_done_callback(_consume)
        return None

    async def _connect(self) -> Channel | None:
        """The shared channel to the actor's current incarnation, or None (fall back to Ray).
        Ray errors of the endpoint call (the actor is dead or restarting) propagate: retried."""
        try:
            endpoint: wire.Endpoint = await self._endpoint_call()
        except BaseException:
            if self.fallback_reason is not None:
                self._fall_back(self.fallback_reason)  # keep backing off while the actor is away
            raise
        loop = asyncio.get_running_loop()
        known = _channels.setdefault(loop, {})
        channel = known.get(endpoint.generation)
        if channel is None or channel.closed:
            try:
                same_node = endpoint.node_id == _local_node_id()  # both None: one process outside Ray
                channel = await Channel.connect(endpoint, same_node, CONNECT_TIMEOUT_S)
            except (OSError, EOFError, asyncio.TimeoutError, ConnectionLost) as exc:
                self._fall_back(f"direct connection could not be set up: {type(exc).__name__}: {exc}")
                return None
            known[endpoint.generation] = channel
        self._channel, self.fallback_reason, self._failures = channel, None, 0
        return channel

    def _fall_back(self, reason: str) -> None:
        """Send calls over Ray for a while: 1 s after the first failure, doubling to 30 s."""
        self.fallback_reason = reason
        self._failures += 1
        self._retry_direct_at = time.monotonic() + min(RETRY_DIRECT_MAX_S, RETRY_DIRECT_S * 2 ** (self._failures - 1))

    async def _still_current(self) -> bool:
        """Whether the channel still reaches a live server (one check at a time per link)."""
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._ask_server())
        return await asyncio.shield(self._check)

    async def _ask_server(self) -> bool:
        """Ask Ray about the actor: another incarnation (or none) means the channel is dead; the
        same one idle for a whole check while our call waited means our request never reached it
        (a silently dropped connection): give the direct path up for a while. An actor too busy
        to answer is given the benefit of the doubt."""
        channel = self._channel
        if channel is None:
            return False
        try:
            endpoint: wire.Endpoint = await asyncio.wait_for(self._endpoint_call(), STALL_CHECK_S)
        except asyncio.TimeoutError:
            return True
        except Exception:  # the actor died or is restarting: this incarnation is gone
            return False
        if endpoint.generation != channel.endpoint.generation:
            return False
        if endpoint.idle_s >= STALL_CHECK_S:
            self._fall_back(f"a direct call went unanswered while the actor sat idle for {endpoint.idle_s:.1f} s "
                            f"(a silently dropped {channel.kind} connection)")
            return False
        return True


def _consume(task: "asyncio.Future[Any]") -> None:
    """A background setup's failure is already recorded in fallback_reason."""
    if not task.cancelled():
        task.exception()


class ShardLink(_Link):
    """A bridge's (or the router's) way to one shard actor: direct when it can, Ray actor calls otherwise.

    Example:
        >>> link = ShardLink(handle, ("/data/chat", 0))
        >>> replies = await link.execute([ops.History("alice", "s1", 20)])
    """

    def __init__(self, handle: Any, shard_key: tuple[str, int], direct: bool = True) -> None:
        super().__init__(handle, direct)
        self.shard_key = shard_key

    def _endpoint_call(self) -> Any:
        return self.handle.endpoint.options(concurrency_group="health").remote()  # not behind a long batch

    async def execute(self, operations: list[ops.ShardOperation], over_ray: bool = False) -> list[ops.Reply]:
        """One batch to the shard (over a Ray actor call if `over_ray`, or while the direct path is
        down); raises the shard's EngineError, ConnectionLost (retry) or Ray's error."""
        sent, replies = await self._request((self.shard_key, operations), over_ray)
        if not sent:
            replies = await self._over_ray(self.handle.execute.remote(operations, self.shard_key))
        result: list[ops.Reply] = replies
        return result


class RouterLink(_Link):
    """A bridge's way to the router's fan-out: direct when it can, a Ray actor call otherwise."""

    async def fan_out(self, *arguments: Any) -> Any:
        """`RouterActor.fan_out(*arguments)`: its answer, or its error (PathNotOpen, ...)."""
        sent, answer = await self._request(arguments, False)
        return answer if sent else await self._over_ray(self.handle.fan_out.remote(*arguments))
