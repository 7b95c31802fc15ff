"""ray_cluster.yaml is a valid cluster-launcher config with token auth and fast failure detection."""

import fnmatch
import json
import os
import pathlib

import pytest
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
    assert "RAY_AUTH_TOKEN_PATH" in head and "RAY_AUTH_TOKEN_PATH" in worker and "--dashboard-host=127.0.0.1" in head
    assert '"health_check_period_ms": 500' in head
    assert any("pip install" in command for command in config["setup_commands"])


def _node_token_path(config):
    """The token path every node's Ray reads (RAY_AUTH_TOKEN_PATH in the start commands)."""
    paths = {command.split("RAY_AUTH_TOKEN_PATH=", 1)[1].split()[0]
             for key in ("head_start_ray_commands", "worker_start_ray_commands")
             for command in config[key] if "RAY_AUTH_TOKEN_PATH=" in command}
    assert len(paths) == 1, paths
    return paths.pop()


def _launcher_path(local):
    """A file_mounts source as `ray up` resolves it: ~ expanded, relative to the launch directory."""
    return pathlib.Path(os.path.expanduser(local)) if local.startswith("~") else (ROOT / local).resolve()


def _rsync_excludes(name, is_dir, patterns):
    """rsync's reading of an unanchored, slash-free pattern: it matches the last path component."""
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if "/" in pattern.lstrip("/") or (dir_only and not is_dir):
            continue
        if fnmatch.fnmatchcase(name, pattern.lstrip("/")):
            return True
    return False


def test_no_file_mount_copies_the_token_from_the_repository():
    """The token reaches the nodes through its own mount from outside the repository (so the
    repository mount cannot carry it), and any token file left inside a mounted directory
    (.ray_auth_token, auth_token, ...) is excluded by rsync_exclude or by that directory's
    .gitignore (rsync_filter). The token's own mount is excluded by neither, in either hop
    (launcher -> head, then head -> workers, which syncs the node path to itself)."""
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    mounts = config["file_mounts"]
    node_token = _node_token_path(config)
    assert node_token in mounts, "the token must reach the nodes through its own file mount"
    token_source = _launcher_path(mounts[node_token])
    assert ROOT not in token_source.parents and token_source != ROOT, token_source
    directories = {remote: _launcher_path(local) for remote, local in mounts.items() if remote != node_token}
    assert directories, "expected the repository mount"
    excludes = config.get("rsync_exclude") or []
    filters = config.get("rsync_filter") or []
    for remote, source in directories.items():
        assert source not in token_source.parents, f"{remote} would copy the token file {token_source}"
        ignore_file = source / ".gitignore"
        ignored = ([line.strip() for line in ignore_file.read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
                   if ".gitignore" in filters and ignore_file.exists() else [])
        assert not any(line.startswith("!") for line in ignored), "rsync cannot read .gitignore negations"
        for name in (".ray_auth_token", "auth_token", token_source.name, pathlib.Path(node_token).name):
            assert _rsync_excludes(name, False, excludes) or _rsync_excludes(name, False, ignored), \
                f"a {name} file in {source} would be copied to {remote}"
    for name in (token_source.name, pathlib.Path(node_token).name):
        assert not _rsync_excludes(name, False, excludes), f"rsync_exclude would drop the token mount ({name})"


def test_cluster_launcher_rsync_carries_the_token_only_through_its_own_mount(tmp_path):
    """Real rsync with the arguments `ray up` builds from this file (Ray's own helper, rsync -avz):
    launcher -> head for every file mount, then head -> worker as the head's autoscaler does. The
    token arrives at the node token path, owner-only; tokens planted in the repository do not."""
    import shutil
    import subprocess

    rsync = shutil.which("rsync")
    if rsync is None:
        pytest.skip("rsync is not installed (the static test above still checks the rules)")
    from ray.autoscaler._private.command_runner import SSHCommandRunner
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    options = {"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")}
    filter_args = SSHCommandRunner._create_rsync_filter_args(None, options)
    token = "f" * 64
    launcher, head, worker = (tmp_path / name for name in ("launcher", "head", "worker"))
    repo = tmp_path / "repo"
    (launcher / ".ray").mkdir(parents=True)
    token_file = launcher / ".ray" / "ffchat_auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    (repo / "api").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    (repo / "api" / "bridge.py").write_text("source")
    for planted in (".ray_auth_token", "auth_token", "ffchat_auth_token", ".venv/token", "chat_data/token",
                    "api/.ray_auth_token"):
        (repo / planted).parent.mkdir(parents=True, exist_ok=True)
        (repo / planted).write_text(token)

    def local(path, home):
        return str(home / path[2:]) if path.startswith("~/") else str(repo / path)

    def sync(source, target):
        if os.path.isdir(source):
            source, target = source.rstrip("/") + "/", target.rstrip("/") + "/"
        os.makedirs(os.path.dirname(target.rstrip("/")), exist_ok=True)
        subprocess.run([rsync, "-avz", *filter_args, source, target], check=True, capture_output=True)

    for remote, source in config["file_mounts"].items():  # ray up: launcher -> head
        sync(local(source, launcher), local(remote, head))
    for remote in config["file_mounts"]:  # the head's autoscaler: head -> worker, same path
        sync(local(remote, head), local(remote, worker))
    node_token = _node_token_path(config)
    for node in (head, worker):
        received = pathlib.Path(local(node_token, node))
        assert received.read_text() == token and received.stat().st_mode & 0o777 == 0o600, node
        copied = [p for p in (node / "ffchat").rglob("*") if p.is_file()]
        assert any(p.name == "bridge.py" for p in copied), copied
        assert [str(p) for p in copied if token in p.read_text(errors="ignore")] == []
