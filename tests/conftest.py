"""Shared fixtures: one local Ray runtime for the test session (capped, no usage stats, token auth).

The multi-node tests replace it with a `ray.cluster_utils.Cluster` for their module and shut that
down afterwards; `ray_runtime` then starts the local runtime again for any test that follows.

Tests run Ray as the library ships it: token auth on, whatever RAY_AUTH_MODE the shell had. The
token must exist before any Ray process starts: `ray.init()` would create a missing one, but a
`Cluster` head does not (its gcs_server dies without one), so on a fresh machine the multi-node
tests and the subprocess drivers need it made here. Subprocesses inherit this environment.
"""

from __future__ import annotations

import os

import pytest

from api.runtime import use_token_auth

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
use_token_auth()  # RAY_AUTH_MODE=token, and ~/.ray/auth_token created (owner-only) if missing

# address "local": a new runtime even while another process's Cluster head is registered in /tmp/ray.
LOCAL_RUNTIME = {"address": "local", "num_cpus": 2, "object_store_memory": 200 * 1024 * 1024,
                 "include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                 "namespace": "ffchat-tests"}


@pytest.fixture(scope="session")
def _ray_session():
    import ray
    yield ray
    if ray.is_initialized():
        ray.shutdown()


def ensure_local_ray():
    import ray
    if not ray.is_initialized():
        ray.init(**LOCAL_RUNTIME)
    return ray


@pytest.fixture
def ray_runtime(_ray_session):
    """The session's local Ray runtime, started on first use (and again after a multi-node module)."""
    return ensure_local_ray()
