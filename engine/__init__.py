"""ff-chat-bridge engine: pure-Python domain logic of one shard (no Ray)."""

from .config import EngineConfig
from .errors import (CorruptRecord, EngineError, InvalidInput, SessionNotFound, ShardClosed, ShardLocked,
                     StaleEpoch, StorageFailure, UserNotFound)
from .message_log import MessageLog
from .metrics import LatencyRecorder, nearest_rank
from .models import normalize_message, validate_id
from .recovery import RecoveryReport
from .routing import shard_index_for, user_shard_index
from .search_index import SearchIndex, merge_ranked, merge_stats, tokenize
from .session_store import merge_analytics
from .shard import Shard
from .shard_cache import ShardCache

__all__ = sorted([
    "CorruptRecord", "EngineConfig", "EngineError", "InvalidInput", "LatencyRecorder", "MessageLog",
    "RecoveryReport", "SearchIndex", "SessionNotFound", "Shard", "ShardCache", "ShardClosed",
    "ShardLocked", "StaleEpoch", "StorageFailure", "UserNotFound", "merge_analytics",
    "merge_ranked", "merge_stats", "nearest_rank", "normalize_message", "shard_index_for", "tokenize",
    "user_shard_index", "validate_id",
])
