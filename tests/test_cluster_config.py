"""ray_cluster.yaml is a valid cluster-launcher config with token auth and fast failure detection."""

import json
import os
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_cluster_yaml_validates_against_rays_schema():
    """The file passes Ray's own schema and config preparation (what `ray up` runs first)."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    schema = json.loads((pathlib.Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))


def test_cluster_yaml_turns_on_token_auth_and_fast_failure_detection():
    """Every node starts with RAY_AUTH_MODE=token, the dashboard on localhost, tuned health checks."""
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "RAY_AUTH_TOKEN_PATH" in head and "--dashboard-host=127.0.0.1" in head
    assert '"health_check_period_ms": 500' in head
    assert any("pip install" in command for command in config["setup_commands"])
