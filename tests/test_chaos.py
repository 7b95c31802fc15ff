"""The chaos run, short: SIGKILL of shard worker processes under writers loses and duplicates nothing.

Same code as `python -m scale_tests.chaos` (run_mode + problems), with a handful of kills.
"""

import pytest

from scale_tests.chaos import problems, run_mode

pytestmark = pytest.mark.ray


@pytest.mark.parametrize(("mode", "kills"), [("flush", 4), ("fsync", 2)])
async def test_sigkilled_shard_workers_lose_and_duplicate_nothing(ray_runtime, tmp_path, mode, kills):
    """K SIGKILLs under 4 same-id-retrying writers: a fresh bridge finds every acknowledged id once, in order."""
    result = await run_mode(mode, str(tmp_path), kills=kills, writers=4, shards=2, seed=7)
    assert problems(result) == []
    assert (result.lost, result.duplicated, result.phantom, result.order_violations) == (0, 0, 0, 0)
    assert result.shards_back and not result.sessions_missing
    # Not vacuous: every kill hit a serving worker and a new process took over...
    assert result.kills == kills and len(result.kill_log) == kills
    assert all(k.new_pid is not None and k.new_pid != k.old_pid for k in result.kill_log)
    assert result.restarts_reported == result.kills_per_shard  # health_check saw each restart
    # ...while writes were flowing: acknowledgements before the first kill, between and after the last.
    firsts = [k.acknowledged_before for k in result.kill_log]
    assert 0 < firsts[0] < firsts[-1] < result.acknowledged
    assert result.acknowledged >= 1000
    assert result.recovered >= result.acknowledged
