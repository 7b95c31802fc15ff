"""Engine tests run without Ray: any attempt to start it fails loudly."""

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch):
    try:
        import ray
    except ImportError:
        yield
        return

    def refuse(*args, **kwargs):
        raise RuntimeError("engine tests must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)
    yield
