"""Shared fixtures: one local Ray runtime per test session (capped, no usage stats, explicit auth mode)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_runtime():
    """Start the session's Ray runtime once; every bridge in the tests joins it."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, namespace="ffchat-tests")
    yield ray
    ray.shutdown()
