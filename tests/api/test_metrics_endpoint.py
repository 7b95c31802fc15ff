"""Ray's Prometheus endpoint shows the ffchat_ metrics moving: a driver in its own process starts the
library's runtime with FFCHAT_METRICS_PORT, does real stores, reads, searches, a failing call and a
compaction and a backup, and reads /metrics twice. Run as `python -m tests.api.test_metrics_endpoint PATH` it is
that driver."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from engine.metrics import path_tag

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRAPE_TIMEOUT_S = 30.0
_SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# The series (with Ray's `ray_` prefix) the first scrape must show, each with the labels it must carry.
EXPECTED = {
    "ray_ffchat_operations_total": {"operation": "store_chat_message", "transport": "direct", "outcome": "ok"},
    "ray_ffchat_operation_latency_ms_bucket": {"operation": "get_chat_history", "transport": "direct"},
    "ray_ffchat_operation_errors_total": {"operation": "store_chat_message", "code": "SESSION_NOT_FOUND"},
    "ray_ffchat_shard_batches_total": {},
    "ray_ffchat_shard_queue_depth": {"shard": "0"},
    "ray_ffchat_shard_cache_hits_total": {},
    "ray_ffchat_shard_cache_misses_total": {},
    "ray_ffchat_shard_log_bytes": {"shard": "1"},
    "ray_ffchat_shard_restarts": {"shard": "0"},
}


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format: (name, labels, value) of every sample."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples.append((match[1], dict(_LABEL.findall(match[2])), float(match[3])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """Sum of `name`'s samples carrying `labels` (over workers and shards); None if there is none."""
    values = [value for sample_name, sample_labels, value in samples if sample_name == name
              and all(sample_labels.get(key) == wanted for key, wanted in labels.items())]
    return sum(values) if values else None


async def _traffic(data, session_id: str) -> None:
    for number in range(20):
        reply = await data.store_chat_message("alice", session_id, {"role": "user", "content": f"tram {number}"})
        assert reply["success"], reply
    for _ in range(3):
        assert (await data.get_chat_history("alice", session_id, limit=10))["success"]
        assert (await data.search_conversations("alice", "tram"))["success"]
    failed = await data.store_chat_message("alice", "no-such-session", {"role": "user", "content": "x"})
    assert failed["metadata"]["error_code"] == "SESSION_NOT_FOUND", failed


async def _scrape_until(url: str, ready) -> tuple[list, float]:
    """Scrape until `ready(samples)`; (samples, seconds waited). Raises TimeoutError with the last text."""
    started = time.monotonic()
    text = ""
    while time.monotonic() - started < SCRAPE_TIMEOUT_S:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            pass
        samples = parse(text)
        if ready(samples):
            return samples, time.monotonic() - started
        await asyncio.sleep(0.2)
    lines = [line for line in text.splitlines() if "ffchat" in line]
    raise TimeoutError(f"{url} not ready after {SCRAPE_TIMEOUT_S} s; ffchat lines: {lines[:40]}")


def _has_expected(samples) -> bool:
    return all(total(samples, name, **labels) is not None for name, labels in EXPECTED.items())


async def _scenario(storage_path: str) -> dict:
    import ray
    from api import FFChatAppBridge
    bridge = await FFChatAppBridge.create_for_chat_app(storage_path, {"shard_count": 2})
    try:
        node = next(node for node in ray.nodes() if node["Alive"])
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("alice", "metrics")
        await _traffic(data, session_id)
        first, first_wait_s = await _scrape_until(url, _has_expected)
        stores = total(first, "ray_ffchat_operations_total", operation="store_chat_message", outcome="ok")
        await _traffic(data, session_id)
        await bridge.backend.compact_all()
        copied = (await bridge.backup(storage_path.rstrip("/") + "-backups"))["bytes_copied"]
        second, second_wait_s = await _scrape_until(url, lambda samples: (
            total(samples, "ray_ffchat_operations_total", operation="store_chat_message", outcome="ok") or 0) > stores
            and total(samples, "ray_ffchat_shard_compactions_total") == 2  # one per shard
            and total(samples, "ray_ffchat_backups_total", outcome="ok") == 1
            and total(samples, "ray_ffchat_backup_bytes_copied_total") == copied > 0)
        return {"first": [sample for sample in first if "ffchat" in sample[0]],
                "second": [sample for sample in second if "ffchat" in sample[0]],
                "waits_s": [first_wait_s, second_wait_s], "url": url}
    finally:
        await bridge.close()
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _run_driver(storage_path: pathlib.Path) -> dict:
    """The scenario in its own process and Ray runtime; ends it (SIGTERM, then SIGKILL) if it hangs,
    so its Ray runtime shuts down (the library's atexit hook) whatever the test's outcome."""
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # Ray's metric export every 0.5 s instead of 10 s, so the test waits about a second per scrape.
    environment.update(FFCHAT_METRICS_PORT=str(_free_port()), RAY_metrics_report_interval_ms="500",
                       PYTHONPATH=str(ROOT))
    driver = subprocess.Popen([sys.executable, "-m", "tests.api.test_metrics_endpoint", str(storage_path)], cwd=ROOT,
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = driver.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        driver.send_signal(signal.SIGTERM)
        try:
            out, err = driver.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            driver.kill()
            out, err = driver.communicate()
        pytest.fail(f"metrics driver hung; stderr: {err[-3000:]}")
    assert driver.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_prometheus_endpoint_shows_ffchat_counters_moving(tmp_path):
    """The endpoint lists every ffchat_ metric with its tags, and a second scrape after more calls
    shows the operation, latency, cache and batch counters higher and a compaction counted."""
    pytest.importorskip("prometheus_client", reason="the test extra installs ray[default] (Ray's metrics agent)")
    result = _run_driver(tmp_path / "store")
    first, second = result["first"], result["second"]
    path = path_tag(str(tmp_path / "store"))
    for name, labels in EXPECTED.items():
        assert total(first, name, path=path, **labels) is not None, name
    for name, labels in [("ray_ffchat_operations_total", {"operation": "store_chat_message", "outcome": "ok"}),
                         ("ray_ffchat_operation_latency_ms_count", {"operation": "get_chat_history"}),
                         ("ray_ffchat_operation_errors_total", {"code": "SESSION_NOT_FOUND"}),
                         ("ray_ffchat_shard_batches_total", {}),
                         ("ray_ffchat_shard_cache_hits_total", {}), ("ray_ffchat_shard_cache_misses_total", {})]:
        assert total(second, name, path=path, **labels) > total(first, name, path=path, **labels), name
    assert total(second, "ray_ffchat_operations_total", operation="store_chat_message", outcome="ok") == 40
    assert total(second, "ray_ffchat_shard_compactions_total", path=path) == 2  # one per shard
    assert total(second, "ray_ffchat_shard_log_bytes", path=path) > 0
    transports = {labels["transport"] for name, labels, _ in second if name == "ray_ffchat_shard_batches_total"}
    assert transports <= {"unix", "tcp"} and transports
    assert not any("alice" in value for _, labels, _ in second for value in labels.values())  # never a user id
    print("export waits (s):", result["waits_s"])


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_scenario(sys.argv[1]))))
