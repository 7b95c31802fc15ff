"""Transport probe: the cost of a direct client -> shard data plane between two local processes, per transport.

    python -m scale_tests.transport_probe [--json [FILE]] [--requests 5000] [--seconds 2]

Candidates: asyncio streams over a Unix socket and over TCP 127.0.0.1 (TCP_NODELAY), and pyzmq DEALER/ROUTER
over ipc:// and tcp:// when `import zmq` works. A spawned server process answers each frame (4-byte big-endian
body length, 8-byte request id, body: a pickled list of engine.operations.Append) with one pickled Reply per
operation; both sides pickle, so the figures are the whole data-plane cost, not the bare socket. Measured:
(a) round-trip p50/p95/p99 in µs, one request in flight; (b) requests/s, 64 in flight on one connection;
(c) ops/s, 64 frames of 100 ops in flight. `--json` prints JSON instead of the table; `--json FILE` adds a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import pickle
import platform
import shutil
import socket
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

from engine.metrics import nearest_rank
from engine.operations import Append, Reply, ShardOperation

try:
    import zmq
    import zmq.asyncio
except ImportError:  # pyzmq is optional: its candidates are skipped
    zmq = None  # type: ignore[assignment]

HEADER = struct.Struct(">IQ")  # body length, request id
PROTOCOL = pickle.HIGHEST_PROTOCOL
SERVER_START_TIMEOUT_S = 30.0
PHASE_TIMEOUT_S = 120.0  # a wedged connection fails the candidate instead of hanging the run
WARMUP_REQUESTS = 500
WARMUP_S = 0.3


@dataclass(frozen=True)
class Candidate:
    """One transport: `kind` is "streams" or "zmq"; `endpoint` is where the server binds."""

    name: str
    kind: str
    endpoint: str


@dataclass
class Result:
    """One candidate's figures (latencies in µs, rates per second); `error` when it failed."""

    name: str
    p50_us: float = 0.0
    p95_us: float = 0.0
    p99_us: float = 0.0
    requests_per_s: float = 0.0
    batched_ops_per_s: float = 0.0
    error: str = ""


# ---------------------------------------------------------------------- payload and frames
def operations(count: int) -> list[ShardOperation]:
    """`count` Appends of one 200-character message each, as the api would send them. Each content is its
    own string, as real messages are: a shared one is pickled once per frame and would flatter the batched run."""
    return [Append(user_id="alice", session_id="s1", messages=[{
        "role": "user", "content": f"{index:08d}" + "x" * 192, "message_id": f"m{index}",
        "timestamp": "2026-11-28T12:00:00+00:00"}]) for index in range(count)]


def frame(request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), request_id) + body


def split(data: bytes) -> tuple[int, bytes]:
    """(request id, body) of one whole frame."""
    length, request_id = HEADER.unpack_from(data)
    body = data[HEADER.size:]
    assert len(body) == length, f"frame says {length} bytes, carries {len(body)}"
    return request_id, body


def answer(body: bytes) -> bytes:
    """The server's work per frame: decode the operations, encode one Reply per operation."""
    ops = pickle.loads(body)
    return pickle.dumps([Reply(True, index) for index in range(len(ops))], PROTOCOL)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    length, request_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    return request_id, await reader.readexactly(length)


def no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY on (asyncio sets it too; set here so the probe does not depend on that)."""
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---------------------------------------------------------------------- server process
def serve(kind: str, endpoint: str, ready: Connection) -> None:
    """Server process entry: bind, send the connectable endpoint over `ready`, answer until killed."""
    asyncio.run(serve_zmq(endpoint, ready) if kind == "zmq" else serve_streams(endpoint, ready))


async def serve_streams(endpoint: str, ready: Connection) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not endpoint.startswith("unix:"):
            no_delay(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):  # the client closed its end
            while True:
                request_id, body = await read_frame(reader)
                writer.write(frame(request_id, answer(body)))
                await writer.drain()
        writer.close()

    if endpoint.startswith("unix:"):
        server = await asyncio.start_unix_server(handle, endpoint.removeprefix("unix:"))
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        endpoint = f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"
    ready.send(endpoint)
    async with server:
        await server.serve_forever()


async def serve_zmq(endpoint: str, ready: Connection) -> None:
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    try:
        if endpoint.startswith("tcp://"):
            endpoint = f"{endpoint}:{router.bind_to_random_port(endpoint)}"
        else:
            router.bind(endpoint)
        ready.send(endpoint)
        while True:
            identity, data = await router.recv_multipart()
            request_id, body = split(data)
            await router.send_multipart([identity, frame(request_id, answer(body))])
    finally:
        router.close(linger=0)
        context.term()


def start_server(candidate: Candidate) -> tuple[BaseProcess, str]:
    """Spawn the server for `candidate`; returns the process and the endpoint to connect to."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(candidate.kind, candidate.endpoint, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(SERVER_START_TIMEOUT_S):
            raise RuntimeError(f"server did not start in {SERVER_START_TIMEOUT_S:.0f} s")
        return process, str(receiver.recv())
    except BaseException as exc:
        stop_server(process)
        if isinstance(exc, EOFError):  # it failed before it listened, e.g. to bind
            raise RuntimeError("server exited before it was ready (its traceback is on stderr)") from exc
        raise
    finally:
        receiver.close()


def stop_server(process: BaseProcess) -> None:
    process.kill()  # the server holds nothing worth flushing, and SIGKILL cannot be ignored or hang
    process.join(5)


# ---------------------------------------------------------------------- client side
class StreamLink:
    """One client connection (as ZmqLink): sends whole frames, receives (request id, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)  # one write per frame: header and body leave in one send()
        await self._writer.drain()

    async def receive(self) -> tuple[int, bytes]:
        return await read_frame(self._reader)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class ZmqLink:
    def __init__(self, endpoint: str) -> None:
        self._context = zmq.asyncio.Context()
        self._dealer = self._context.socket(zmq.DEALER)
        self._dealer.connect(endpoint)

    async def send(self, data: bytes) -> None:
        await self._dealer.send(data)

    async def receive(self) -> tuple[int, bytes]:
        return split(await self._dealer.recv())

    async def close(self) -> None:
        self._dealer.close(linger=0)
        self._context.term()


async def open_link(kind: str, endpoint: str) -> StreamLink | ZmqLink:
    if kind == "zmq":
        return ZmqLink(endpoint)
    if endpoint.startswith("unix:"):
        reader, writer = await asyncio.open_unix_connection(endpoint.removeprefix("unix:"))
    else:
        _, host, port = endpoint.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        no_delay(writer)
    return StreamLink(reader, writer)


class Client:
    """Many coroutines share one link: each call waits on a future its reply's request id resolves."""

    def __init__(self, link: StreamLink | ZmqLink) -> None:
        self._link = link
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._reader = asyncio.create_task(self._read_replies())

    async def call(self, ops: list[ShardOperation]) -> list[Reply]:
        if self._reader.done():  # the connection failed: say why instead of waiting forever
            self._reader.result()
            raise ConnectionError("reply reader stopped")
        request_id = next(self._ids)
        future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        await self._link.send(frame(request_id, pickle.dumps(ops, PROTOCOL)))
        return cast(list[Reply], pickle.loads(await future))

    async def _read_replies(self) -> None:
        try:
            while True:
                request_id, body = await self._link.receive()
                self._pending.pop(request_id).set_result(body)
        except BaseException as exc:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"connection failed: {exc!r}"))
            raise

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._link.close()


# ---------------------------------------------------------------------- measurements
async def round_trips_us(client: Client, ops: list[ShardOperation], count: int) -> list[float]:
    """`count` sequential calls after a warm-up, each timed in µs, sorted."""
    for _ in range(WARMUP_REQUESTS):
        await client.call(ops)
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        replies = await client.call(ops)
        samples.append((time.perf_counter_ns() - started) / 1000)
        assert len(replies) == len(ops)
    return sorted(samples)


async def pipelined_per_s(client: Client, ops: list[ShardOperation], in_flight: int, seconds: float) -> float:
    """Calls completed per second with `in_flight` coroutines each calling back to back."""
    async def worker(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await client.call(ops)
            done += 1
        return done

    await asyncio.gather(*(worker(time.perf_counter() + WARMUP_S) for _ in range(in_flight)))
    started = time.perf_counter()
    counts = await asyncio.gather(*(worker(started + seconds) for _ in range(in_flight)))
    return sum(counts) / (time.perf_counter() - started)


async def measure(candidate: Candidate, endpoint: str, args: argparse.Namespace) -> Result:
    client = Client(await open_link(candidate.kind, endpoint))
    try:
        one, batch = operations(1), operations(args.batch)
        samples = await round_trips_us(client, one, args.requests)
        requests_per_s = await pipelined_per_s(client, one, args.in_flight, args.seconds)
        frames_per_s = await pipelined_per_s(client, batch, args.in_flight, args.seconds)
    finally:
        await client.close()
    return Result(candidate.name, nearest_rank(samples, 50), nearest_rank(samples, 95), nearest_rank(samples, 99),
                  requests_per_s, frames_per_s * args.batch)


def probe(candidate: Candidate, args: argparse.Namespace) -> Result:
    """Start the server, measure, stop it; a failure becomes the row's error, not the run's."""
    process: BaseProcess | None = None
    try:
        process, endpoint = start_server(candidate)
        return asyncio.run(asyncio.wait_for(measure(candidate, endpoint, args), PHASE_TIMEOUT_S))
    except Exception as exc:
        return Result(candidate.name, error=repr(exc))
    finally:
        if process is not None:
            stop_server(process)


# ---------------------------------------------------------------------- run and report
def candidates(directory: str) -> list[Candidate]:
    found = [Candidate("asyncio unix socket", "streams", f"unix:{directory}/streams.sock"),
             Candidate("asyncio tcp 127.0.0.1", "streams", "tcp:127.0.0.1:0")]
    if zmq is not None:
        found += [Candidate("pyzmq ipc://", "zmq", f"ipc://{directory}/zmq.sock"),
                  Candidate("pyzmq tcp://", "zmq", "tcp://127.0.0.1")]
    return found


def serialization_us(batch: int) -> dict[str, float]:
    """In-process pickle cost of one call (request and reply, both directions): the floor under every row."""
    costs = {}
    for size in (1, batch):
        ops, rounds = operations(size), max(200, 20_000 // size)
        started = time.perf_counter_ns()
        for request_id in range(rounds):
            request = split(frame(request_id, pickle.dumps(ops, PROTOCOL)))[1]
            pickle.loads(split(frame(request_id, answer(request)))[1])
        costs[f"{size}_ops_us"] = (time.perf_counter_ns() - started) / rounds / 1000
    return costs


def print_table(results: list[Result], args: argparse.Namespace, info: dict[str, Any]) -> None:
    one, batch = (len(pickle.dumps(operations(size), PROTOCOL)) for size in (1, args.batch))
    print(f"transport probe: {one} B request (1 Append), {batch} B frame ({args.batch} Appends); "
          + ", ".join(f"{key} {value}" for key, value in info["machine"].items()))
    print(f"pickle floor in-process per call: {info['serialization']['1_ops_us']:.1f} µs (1 op), "
          f"{info['serialization'][f'{args.batch}_ops_us']:.1f} µs ({args.batch} ops)")
    if zmq is None:
        print("pyzmq not installed: its candidates are skipped")
    header = (f"{'transport':22s} {'p50 µs':>8s} {'p95 µs':>8s} {'p99 µs':>8s} "
              f"{f'req/s @{args.in_flight}':>12s} {f'ops/s @{args.in_flight}x{args.batch}':>15s}")
    print(header)
    print("-" * len(header))
    for row in results:
        if row.error:
            print(f"{row.name:22s} FAILED: {row.error}")
        else:
            print(f"{row.name:22s} {row.p50_us:8.1f} {row.p95_us:8.1f} {row.p99_us:8.1f} "
                  f"{row.requests_per_s:12,.0f} {row.batched_ops_per_s:15,.0f}")
    print(f"({args.requests} timed round trips after {WARMUP_REQUESTS} warm-up; rates over {args.seconds:g} s "
          f"after {WARMUP_S:g} s warm-up, one connection)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scale_tests.transport_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="results as JSON: to stdout instead of the table, or to FILE beside it")
    parser.add_argument("--requests", type=int, default=5000, help="timed round trips, one in flight (≥ 5000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput run")
    parser.add_argument("--in-flight", type=int, default=64, help="concurrent requests in the throughput runs")
    parser.add_argument("--batch", type=int, default=100, help="operations per frame in the batched run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    directory = tempfile.mkdtemp(prefix="ffchat-transport-")
    try:
        results = [probe(candidate, args) for candidate in candidates(directory)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    if zmq is not None:
        machine |= {"pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version()}
    info = {"machine": machine, "serialization": serialization_us(args.batch), "arguments": vars(args),
            "results": [asdict(row) for row in results]}
    if args.json == "-":
        print(json.dumps(info, indent=2))
    else:
        print_table(results, args, info)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(info, handle, indent=2)
    return 1 if any(row.error for row in results) else 0


if __name__ == "__main__":
    sys.exit(main())
