"""engine.verify agrees with what opening a shard does: a SHARD.json that names another index or
shard count makes the shard refuse to open, so verify reports it (it used to say the store was fine)."""

from __future__ import annotations

import json

from engine.manifest import PathManifest
from engine.verify import verify_store
from tests.factories import open_shard


def test_verify_reports_a_shard_whose_identity_file_names_another_shard(tmp_path):
    """A shard directory copied from another store (SHARD.json index 1 in shard-0000) fails verification."""
    manifest = PathManifest(str(tmp_path))
    manifest.open(1, explicit=False)
    open_shard(tmp_path).close()
    manifest.close()
    assert verify_store(str(tmp_path))["ok"]
    (tmp_path / "shard-0000" / "SHARD.json").write_text(json.dumps({"index": 1, "shard_count": 1}))
    report = verify_store(str(tmp_path))
    assert not report["ok"] and "SHARD.json says" in report["errors"][0]
