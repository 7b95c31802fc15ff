"""Metrics recording is a no-op for a bridge without Ray (in-process): nothing reaches the exporter;
and FFCHAT_METRICS_PORT turns the local runtime's endpoint on."""

from __future__ import annotations

import pytest

from actors.exporter import EXPORTER
from api import runtime

IN_PROCESS = True


async def test_in_process_bridge_records_nothing_for_export(bridge, data, session, monkeypatch):
    """Stores, reads, a failure and a search of an in-process bridge never call the exporter."""
    calls = []
    for method in ("count", "observe", "record_operation", "record_shard"):
        monkeypatch.setattr(EXPORTER, method, lambda *args, **kwargs: calls.append(args))
    user_id, session_id = session
    assert (await data.store_chat_message(user_id, session_id, {"role": "user", "content": "tram"}))["success"]
    assert (await data.get_chat_history(user_id, session_id))["success"]
    assert (await data.search_conversations(user_id, "tram"))["success"]
    assert not (await data.store_chat_message(user_id, "missing", {"role": "user", "content": "x"}))["success"]
    assert bridge.metrics_path is None and calls == []
    assert data.get_performance_metrics()["total_operations"] >= 4  # the bridge's own figures still count


@pytest.mark.parametrize("value, expected", [(None, {}), ("", {}), ("9100", {"_metrics_export_port": 9100}),
                                             (" 65535 ", {"_metrics_export_port": 65535})])
def test_the_local_runtime_takes_its_metrics_port_from_the_environment(monkeypatch, value, expected):
    """FFCHAT_METRICS_PORT becomes ray.init's `_metrics_export_port` for the runtime the library starts."""
    if value is None:
        monkeypatch.delenv(runtime.METRICS_PORT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(runtime.METRICS_PORT_VARIABLE, value)
    assert runtime.metrics_options() == expected


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_metrics_port_that_is_no_port_is_refused(monkeypatch, value):
    """A value that is not a port number fails the start (reported at ray_connection), never ignored."""
    monkeypatch.setenv(runtime.METRICS_PORT_VARIABLE, value)
    with pytest.raises(ValueError, match=runtime.METRICS_PORT_VARIABLE):
        runtime.metrics_options()


@pytest.mark.parametrize("value", ["off", "0", "false", "NO"])
def test_ffchat_metrics_off_keeps_the_exporter_from_starting(monkeypatch, value):
    """FFCHAT_METRICS=off: no recording, no flush thread, whatever Ray and its extras offer."""
    from actors.exporter import Exporter
    monkeypatch.setenv("FFCHAT_METRICS", value)
    exporter = Exporter(publish=lambda drained: None)
    assert exporter.start() is False and not exporter.started
