"""Contract §10.13 "Nobody else gets in": the local runtime the library starts refuses any process
without Ray's auth token (or, with RAY_AUTH_MODE=disabled, listens on 127.0.0.1 only), and no secret
ends up under the storage path.

Token mode is checked on the test session's runtime (started after runtime.use_token_auth(), as
the library does) with client processes that must be refused or let in. The disabled mode starts a
real runtime through api.runtime in a subprocess and looks at every socket its processes listen on.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from api import FFChatAppBridge
from api import runtime
from tests.factories import message

pytestmark = pytest.mark.ray
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# A refused client retries for ~20 s by default (1 s per attempt); 3 attempts keep the test short.
# The client that has the token runs with the same budget, so a refusal is not a mere timeout.
CLIENT_RETRIES = "3"

_CLIENT = textwrap.dedent("""
    import sys
    import ray
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    print("CONNECTED", flush=True)
    ray.shutdown()
""")


def _environment(home: pathlib.Path, **changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update({"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"})
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


async def _client(address: str, env: dict[str, str]) -> tuple[int | None, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, address, env={**env, "RAY_NUM_REDIS_GET_RETRIES": CLIENT_RETRIES},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        output, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    except asyncio.TimeoutError:
        process.kill()
        output, errors = await process.communicate()
    return process.returncode, output, errors


def _refused(result: tuple[int | None, bytes, bytes]) -> bool:
    code, output, errors = result
    return code != 0 and b"CONNECTED" not in output and b"InvalidAuthToken" in errors


def _current_token() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    return pathlib.Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or runtime.default_token_path()).read_text().strip()


async def test_runtime_refuses_processes_without_its_token(ray_runtime, tmp_path):
    """The test session's runtime (token auth, as the library starts it) refuses a process with auth
    disabled and one with a wrong token; a process with the token joins with the same retry budget."""
    from ray._raylet import AuthenticationMode, get_authentication_mode
    assert get_authentication_mode() == AuthenticationMode.TOKEN
    address = ray_runtime.get_runtime_context().gcs_address
    token, wrong = _current_token(), "0" * 64
    assert len(token) >= 32 and token != wrong
    home = tmp_path  # no ~/.ray/auth_token there to fall back on: each client has only what it is given
    without, wrong_token, right = await asyncio.gather(
        _client(address, _environment(home, RAY_AUTH_MODE="disabled")),
        _client(address, _environment(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=wrong)),
        _client(address, _environment(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)))
    assert b"CONNECTED" in right[1], right[2][-2000:]
    assert _refused(without), without
    assert _refused(wrong_token), wrong_token


def test_library_starts_its_local_runtime_with_token_auth(monkeypatch, tmp_path):
    """RAY_AUTH_MODE unset, no token yet: the runtime is started in token mode on all interfaces as
    Ray defaults, after a new 256-bit token was written owner-only to ~/.ray/auth_token."""
    for name in AUTH_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    calls = []

    class FakeRay:
        @staticmethod
        def init(**options):
            token = tmp_path / ".ray" / "auth_token"
            calls.append((dict(options), os.environ.get("RAY_AUTH_MODE"), token.stat().st_mode & 0o777,
                          token.parent.stat().st_mode & 0o777, token.read_text()))

    runtime._start_local(FakeRay, {"namespace": "x"})
    monkeypatch.setenv("RAY_AUTH_MODE", "Token")
    runtime._start_local(FakeRay, {"namespace": "x"})
    (first_options, mode, perms, folder_perms, token), second = calls
    assert first_options == {"namespace": "x"} and mode == "token", calls
    assert perms == 0o600 and folder_perms == 0o700 and len(token) == 64, calls
    assert second[:2] == ({"namespace": "x"}, "token") and second[4] == token  # an existing token is kept
    assert runtime.ensure_auth_token() is None


def test_a_configured_token_is_left_alone(monkeypatch, tmp_path):
    """RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH: Ray reads the token from there; nothing is written."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in (("RAY_AUTH_TOKEN", "a" * 64), ("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))):
        for other in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        assert runtime.ensure_auth_token() is None
    assert not (tmp_path / ".ray").exists()


async def test_no_file_under_the_storage_path_contains_the_token(ray_runtime, tmp_path):
    """After a bridge stored a message (and closed, so everything is flushed), no file under its
    storage path holds the runtime's auth token."""
    from ray._raylet import AuthenticationMode, get_authentication_mode
    assert get_authentication_mode() == AuthenticationMode.TOKEN
    token = _current_token().encode()
    assert len(token) >= 32
    path = tmp_path / "data"
    bridge = await FFChatAppBridge.create_for_chat_app(str(path), {"shard_count": 1, "durability": "fsync"})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("sec-user", "security")
        stored = await data.store_chat_message("sec-user", session_id, message("a findable secret-free line"))
        assert stored["success"], stored
    finally:
        await bridge.close()
    files = [p for p in path.rglob("*") if p.is_file()]
    contents = {p: p.read_bytes() for p in files}
    assert any(b"a findable secret-free line" in c for c in contents.values()), sorted(map(str, files))
    holding = [str(p) for p, c in contents.items() if token in c]
    assert holding == []


_LOOPBACK_RUNTIME = textwrap.dedent("""
    import asyncio, json, os, sys
    sys.path.insert(0, {repo!r})
    import psutil
    from api import FFChatAppBridge
    from tests.factories import message

    async def main():
        bridge = await FFChatAppBridge.create_for_chat_app({path!r}, {{"shard_count": 1}})
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("u", "loopback")
        stored = await data.store_chat_message("u", session_id, message("over loopback"))
        import ray
        session_dir = ray._private.worker._global_node.get_session_dir_path()
        processes = {{p.pid: p for p in psutil.Process().children(recursive=True)}}
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(session_dir in part for part in p.info["cmdline"] or []):
                    processes[p.pid] = p
            except psutil.Error:
                pass
        processes[os.getpid()] = psutil.Process()
        listeners = []
        for pid, p in processes.items():
            try:
                listeners += [[p.name(), c.laddr.ip, c.laddr.port] for c in p.net_connections(kind="inet")
                              if c.status == psutil.CONN_LISTEN]
            except psutil.Error:
                pass
        # The GCS port answers on 127.0.0.1 and refuses on this machine's own other addresses.
        import socket
        port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        reachable = {{}}
        externals = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                     if a.family == socket.AF_INET and not a.address.startswith("127.")]
        for host in ["127.0.0.1"] + externals:
            try:
                socket.create_connection((host, port), timeout=5).close()
                reachable[host] = True
            except OSError:
                reachable[host] = False
        print(json.dumps({{"stored": stored["success"], "node_ip": ray.util.get_node_ip_address(),
                          "gcs_port": port, "listeners": listeners, "reachable": reachable}}), flush=True)
        await bridge.close()
    asyncio.run(main())
""")

LOOPBACK_ADDRESSES = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


async def test_auth_disabled_runtime_listens_on_loopback_only(tmp_path):
    """With RAY_AUTH_MODE=disabled set by the application, the runtime the bridge starts serves the
    bridge, every listening socket of its processes (gcs_server, raylet, agents, workers, driver)
    is on 127.0.0.1, and the machine's own other addresses refuse the GCS port."""
    home = tmp_path / "home"
    home.mkdir()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LOOPBACK_RUNTIME.format(repo=REPO, path=str(tmp_path / "data")),
        env=_environment(home, RAY_AUTH_MODE="disabled"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output, errors = await asyncio.wait_for(process.communicate(), timeout=120)
    lines = [line for line in output.decode().splitlines() if line.startswith("{")]
    assert lines, errors.decode()[-3000:]
    report = json.loads(lines[-1])
    assert report["stored"] and report["node_ip"] == "127.0.0.1", report
    names = {name for name, _, _ in report["listeners"]}
    assert "gcs_server" in names and "raylet" in names, report["listeners"]
    assert report["gcs_port"] in {port for _, _, port in report["listeners"]}, report
    exposed = [entry for entry in report["listeners"] if entry[1] not in LOOPBACK_ADDRESSES]
    assert exposed == [], exposed
    assert report["reachable"].pop("127.0.0.1") is True, report
    assert not any(report["reachable"].values()), report["reachable"]
    assert not (home / ".ray" / "auth_token").exists()  # no token made or needed in this mode


_UNPROTECTABLE = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {repo!r})
    import ray
    from ray._private import services
    services.resolve_ip_for_localhost = lambda host: "198.51.100.7"  # a Ray that cannot keep 127.0.0.1
    from api import FFChatAppBridge, InitializationError

    async def main():
        try:
            await FFChatAppBridge.create_for_chat_app({path!r})
        except InitializationError as exc:  # the factory's error wraps initialize()'s
            cause = exc.__cause__
            print(json.dumps({{"message": exc.message, "step": cause.context.get("initialization_step"),
                              "ray_started": ray.is_initialized()}}))
    asyncio.run(main())
""")


async def test_auth_disabled_runtime_is_refused_when_loopback_binding_is_impossible(tmp_path):
    """If Ray would not keep the node on 127.0.0.1, no unauthenticated runtime starts: the bridge
    fails at ray_connection with a message that says why and what to do."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UNPROTECTABLE.format(repo=REPO, path=str(tmp_path / "data")),
        env=_environment(tmp_path, RAY_AUTH_MODE="disabled"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    assert output.strip(), errors.decode()[-3000:]
    report = json.loads(output.decode().strip().splitlines()[-1])
    assert report["step"] == "ray_connection" and not report["ray_started"], report
    assert "RAY_AUTH_MODE='disabled'" in report["message"] and "127.0.0.1" in report["message"], report
    assert "ray.init()" in report["message"], report


@pytest.mark.parametrize("ray_address, expected", [(None, "start"), ("", "start"), ("local", "start"),
                                                   ("10.0.0.10:6379", "join")])
def test_ray_address_in_the_environment_decides_between_start_and_join(monkeypatch, ray_address, expected):
    """RAY_ADDRESS naming a cluster is a join (the environment's auth settings apply, nothing is
    bound or generated); unset, empty or "local" is the local runtime with the library's protection."""
    import ray
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: calls.append(("join", options["address"])))
    monkeypatch.setattr(runtime, "_start_local", lambda _ray, options: calls.append(("start", options["address"])))
    monkeypatch.setattr(runtime.atexit, "register", lambda *_: None)
    monkeypatch.setattr(runtime, "_owned", runtime._owned)
    if ray_address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    runtime._start_or_join(None)
    assert calls == [(expected, "local" if expected == "start" else ray_address)]
