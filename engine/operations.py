"""The typed calls that cross a process boundary: shard operations, fan-out requests and their replies.

A bridge sends a list of `ShardOperation`s to one shard (one actor call, one group commit) and gets
one `Reply` per operation; a user-level read or delete is one `FanOutRequest` to the router, which
plans per-shard operations and merges their replies (engine/fan_out.py). Every type here is a
frozen, slotted dataclass or NamedTuple: plain data that pickles fast (Ray sends it with cloudpickle)
and that mypy checks at every call site. Dataclasses, not pydantic: the values were validated by
the api before they are built and are re-checked by the shard's handlers, so a second validation
pass on every message would only add cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple, TypeVar

from .errors import EngineError


class Reply(NamedTuple):
    """The outcome of one shard operation: `value` when `ok`, else the EngineError it raised."""

    ok: bool
    value: Any

    def unwrap(self) -> Any:
        """The value, or raise the operation's error."""
        if not self.ok:
            raise self.value
        return self.value


def failed(error: EngineError) -> Reply:
    return Reply(False, error)


class Cached(NamedTuple):
    """A read answered from the shard's result cache (`cache_hit`) or computed afresh."""

    value: Any
    cache_hit: bool


# ---------------------------------------------------------------------- shard operations
@dataclass(frozen=True, slots=True)
class ShardOperation:
    """One call to a shard. `writes`: changes the log (paused after a failed commit); `after_commit`:
    writes the log itself, so it runs once the batch's own records are committed."""

    writes: ClassVar[bool] = False
    after_commit: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class CreateUser(ShardOperation):
    writes: ClassVar[bool] = True
    user_id: str
    profile: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GetUser(ShardOperation):
    user_id: str


@dataclass(frozen=True, slots=True)
class UserExists(ShardOperation):
    user_id: str


@dataclass(frozen=True, slots=True)
class UpdateUser(ShardOperation):
    writes: ClassVar[bool] = True
    user_id: str
    updates: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListUsers(ShardOperation):
    pass


@dataclass(frozen=True, slots=True)
class CreateSession(ShardOperation):
    writes: ClassVar[bool] = True
    user_id: str
    session_id: str
    title: str | None = None
    session_type: str = "chat"
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class GetSession(ShardOperation):
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class UpdateSession(ShardOperation):
    writes: ClassVar[bool] = True
    user_id: str
    session_id: str
    updates: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteSession(ShardOperation):
    """Reply: the number of messages deleted."""

    writes: ClassVar[bool] = True
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class ListUserSessions(ShardOperation):
    """Reply: Cached(list of session dicts)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class SessionStats(ShardOperation):
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class DeleteUserData(ShardOperation):
    writes: ClassVar[bool] = True
    user_id: str


@dataclass(frozen=True, slots=True)
class Purge(ShardOperation):
    writes: ClassVar[bool] = True
    cutoff_epoch: float
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Append(ShardOperation):
    """Reply: AppendReply. Idempotent on each message's message_id."""

    writes: ClassVar[bool] = True
    user_id: str
    session_id: str
    messages: list[dict[str, Any]]
    session_updated_at: str | None = None  # an import keeps the exported session's updated_at


@dataclass(frozen=True, slots=True)
class History(ShardOperation):
    """Reply: Cached(page dict {messages, total_count, has_more})."""

    user_id: str
    session_id: str
    limit: int
    offset: int = 0
    before: str | None = None
    after: str | None = None
    latest: bool = False


@dataclass(frozen=True, slots=True)
class ReadRange(ShardOperation):
    """Reply: {messages, total_count}, messages [start, min(start + count, end))."""

    user_id: str
    session_id: str
    start: int
    count: int
    end: int | None = None


@dataclass(frozen=True, slots=True)
class ExportSession(ShardOperation):
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class SearchStats(ShardOperation):
    user_id: str
    terms: list[str]


@dataclass(frozen=True, slots=True)
class Search(ShardOperation):
    """Reply: Cached(SearchPart) scored with the user's global corpus statistics."""

    user_id: str
    terms: list[str]
    global_stats: dict[str, Any]
    limit: int
    filters: dict[str, Any] = field(default_factory=dict)
    sort: str = "relevance"
    include_metadata: bool = True


@dataclass(frozen=True, slots=True)
class VectorSearch(ShardOperation):
    """Reply: SearchPart (with `pending`)."""

    user_id: str
    query_vector: list[float]
    limit: int
    filters: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    include_metadata: bool = True
    sort: str = "relevance"


@dataclass(frozen=True, slots=True)
class EmbedPending(ShardOperation):
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Analytics(ShardOperation):
    """Reply: Cached(analytics partial over the `days` before `now`, epoch seconds)."""

    user_id: str
    days: int
    now: float


@dataclass(frozen=True, slots=True)
class ClearCache(ShardOperation):
    pass


@dataclass(frozen=True, slots=True)
class Compact(ShardOperation):
    writes: ClassVar[bool] = True
    after_commit: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Flush(ShardOperation):
    after_commit: ClassVar[bool] = True


# ---------------------------------------------------------------------- shard replies
@dataclass(frozen=True, slots=True)
class AppendReply:
    message_ids: list[str]
    stored_at: str
    count: int  # new messages
    duplicates: int
    records: list[dict[str, Any]]  # per message, for single stores only
    session_bytes: int


@dataclass(frozen=True, slots=True)
class SearchPart:
    """One shard's ranked hits (dicts with relevance_score and timestamp_epoch) and match count."""

    hits: list[dict[str, Any]]
    total: int
    pending: int = 0  # vector search: the user's messages not embedded yet


# ---------------------------------------------------------------------- fan-out requests (to the router)
@dataclass(frozen=True, slots=True)
class FanOutRequest:
    """A user-level call the router answers from every shard of a path."""


@dataclass(frozen=True, slots=True)
class SearchRequest(FanOutRequest):
    """Ranked search over one user's messages; `mode` is text, vector or hybrid. Reply: SearchResult."""

    user_id: str
    user_shard: int
    mode: str
    terms: list[str]
    offset: int
    limit: int
    filters: dict[str, Any] = field(default_factory=dict)
    sort: str = "relevance"
    include_metadata: bool = True
    vector: list[float] | None = None
    threshold: float | None = None

    @property
    def window(self) -> int:
        return self.offset + self.limit


@dataclass(frozen=True, slots=True)
class ListSessionsRequest(FanOutRequest):
    """Reply: SessionListing."""

    user_id: str
    user_shard: int


@dataclass(frozen=True, slots=True)
class AnalyticsRequest(FanOutRequest):
    """Reply: Cached(analytics dict); `now` is the window's end (epoch seconds)."""

    user_id: str
    user_shard: int
    days: int
    now: float


@dataclass(frozen=True, slots=True)
class DeleteUserRequest(FanOutRequest):
    """Reply: {sessions_deleted, messages_deleted}. Raises UserNotFound."""

    user_id: str
    user_shard: int


@dataclass(frozen=True, slots=True)
class PurgeRequest(FanOutRequest):
    """Reply: {messages_deleted, sessions_deleted}."""

    cutoff_epoch: float
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ListUsersRequest(FanOutRequest):
    """Reply: sorted list of user ids."""


@dataclass(frozen=True, slots=True)
class ClearCacheRequest(FanOutRequest):
    """Reply: cache entries dropped over every shard."""


@dataclass(frozen=True, slots=True)
class EmbedPendingRequest(FanOutRequest):
    """Reply: messages embedded over every shard."""


# ---------------------------------------------------------------------- fan-out replies
@dataclass(frozen=True, slots=True)
class SearchResult:
    results: list[dict[str, Any]]
    total: int  # matches before offset/limit
    shards_failed: list[int]
    cache_hit: bool
    pending: int = 0


@dataclass(frozen=True, slots=True)
class SessionListing:
    sessions: list[dict[str, Any]]  # newest first
    user_exists: bool
    cache_hit: bool


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def handles(operation: type[ShardOperation]) -> Callable[[_Handler], _Handler]:
    """Mark a shard method as the handler of `operation`; its parameters are the operation's
    fields (engine/shard.py collects the marks into its registry, and a test checks they bind)."""
    def mark(function: _Handler) -> _Handler:
        function.__handles__ = operation  # type: ignore[attr-defined]
        return function
    return mark


# ---------------------------------------------------------------------- path registration (to the router)
@dataclass(frozen=True, slots=True)
class OpenPathRequest:
    """Attach a bridge to a storage path, opening it first if needed (`template` is the bridge's
    EngineConfig for the whole path; the router divides the cache over the stored shard count).
    `shards` re-registers a path whose shard actors already exist (after a router restart)."""

    namespace: str
    template: Any  # EngineConfig
    requested_shards: int
    explicit: bool
    compress_records: bool
    shards: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class PathOpened:
    shards: list[Any]  # actor handles, one per shard
    config: Any  # the EngineConfig each shard was assigned
    attached: int
    router_pid: int
