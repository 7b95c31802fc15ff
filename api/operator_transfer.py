"""`chat-bridge export --user / --all` and `chat-bridge import` of a file of many sessions.

A file of many sessions is the concatenation of session exports (api/transfer.py): users in id
order, each user's sessions newest first, each as its header line and then its messages. Both
commands go through the data layer's public calls (list_users, list_sessions, export_session,
import_session), one session per call, so one call's deadline never has to cover a whole store.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, TextIO

from engine.errors import InvalidInput
from engine.models import validate_id

from . import transfer
from .errors import ChatIntegrationError
from .operator_output import Tracker, progress

EXIT_OK, EXIT_ERROR = 0, 2
Result = tuple[int, Any, str | None]  # exit code, the --json document, the text (None: nothing to print)
_PAGE = 1000  # list_sessions' largest page


def _error(message: str, code: str = "INVALID_ARGUMENT") -> Result:
    return EXIT_ERROR, {"error": message, "error_code": code}, f"error ({code}): {message}"


async def export_sessions(bridge: Any, user: str | None, out: str | None, show_progress: bool) -> Result:
    """Every session of `user` (or of every user) as one JSONL stream, to `out` (atomically) or stdout.

    To stdout the data is written session by session, so a failure part way leaves what was written
    (exit 2 says so); to a file, a failure leaves no file. A session deleted while the export runs
    is skipped and listed under "skipped"."""
    data = bridge.get_data_layer()
    try:
        users = [user] if user is not None else await data.storage.list_users()
        listing = [(owner, session) for owner in users for session in await _session_ids(data, owner)]
    except ChatIntegrationError as exc:
        return _error(exc.message, exc.error_code or "STORAGE_ERROR")
    # A bar beside data going to a terminal would garble it; beside a file or a pipe it is what you want.
    show = show_progress and (out is not None or not sys.stdout.isatty())
    totals: dict[str, Any] = {"users": len(users), "sessions": 0, "message_count": 0, "bytes": 0,
                              "path": out, "skipped": []}
    try:
        with progress("exporting sessions", len(listing), show) as tracker:
            if out is None:
                failure = await _export_into(data, listing, sys.stdout, totals, tracker)
            else:
                with transfer.atomic_text_file(out) as handle:
                    failure = await _export_into(data, listing, handle, totals, tracker)
                    if failure is not None:
                        raise _Abandoned()
    except _Abandoned:
        pass
    except BrokenPipeError:  # `export --all | head`: the reader stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exit's flush cannot fail again
        return _error(f"stdout was closed after {totals['sessions']} sessions")
    except OSError as exc:
        return _error(f"cannot write {out}: {exc.strerror or exc}")
    if failure is not None:
        return failure
    where = f"to {out}" if out else "to stdout"
    return EXIT_OK, totals, (f"exported {totals['message_count']} messages in {totals['sessions']} sessions of "
                             f"{totals['users']} users {where}")


class _Abandoned(Exception):
    """Leave the export file unwritten (atomic_text_file removes its temporary file)."""


async def _session_ids(data: Any, user: str) -> list[str]:
    """Every session id of `user` (pages of list_sessions); raises ChatIntegrationError on failure."""
    ids: list[str] = []
    while True:
        page = await data.list_sessions(user, limit=_PAGE, offset=len(ids))
        if not page["success"]:
            raise ChatIntegrationError(page["error"], error_code=page["metadata"]["error_code"])
        ids += [session["session_id"] for session in page["data"]["sessions"]]
        if not page["data"]["has_more"]:
            return ids


async def _export_into(data: Any, listing: list[tuple[str, str]], handle: TextIO, totals: dict[str, Any],
                       tracker: Tracker) -> Result | None:
    """Write each session's JSONL to `handle`; the failure's Result, or None when all went."""
    for user, session_id in listing:
        result = await data.export_session(user, session_id)
        tracker.advance(1)
        if not result["success"]:
            if result["metadata"]["error_code"] == "SESSION_NOT_FOUND":
                totals["skipped"].append({"user_id": user, "session_id": session_id})
                continue
            done = f" after {totals['sessions']} sessions were written" if handle is sys.stdout else ""
            return _error(f"exporting {user}/{session_id}: {result['error']}{done}",
                          result["metadata"]["error_code"])
        handle.write(result["data"]["jsonl"])
        handle.flush()
        totals["sessions"] += 1
        totals["message_count"] += result["data"]["message_count"]
        totals["bytes"] += result["data"]["bytes"]
    return None


async def import_sessions(bridge: Any, path: str, user: str | None, on_conflict: str, show_progress: bool
                          ) -> Result:
    """Every session of a JSONL file, under its own user (or all under `user`).

    The whole file is read and checked first (JSON, headers, messages, ids, one (user, session) pair
    at most once), so a bad file writes nothing; then each session is imported in its own call. If
    a call fails (e.g. the session exists and on_conflict is "error"), the sessions before it stay
    imported: run again with --on-conflict merge to finish (messages are idempotent on message_id)."""
    data = bridge.get_data_layer()
    try:
        plan = _check_file(path, user, bridge.settings.max_message_bytes)
    except InvalidInput as exc:
        return _error(f"{path}: {exc.message}", exc.code)
    document: dict[str, Any] = {"imported": 0, "skipped": 0, "message_count": 0, "session_count": 0,
                                "sessions": []}
    with progress("importing messages", sum(count for *_, count in plan), show_progress) as tracker:
        for (line, text), (owner, session_id, count) in zip(_sections(path), plan):
            result = await data.import_session(owner, jsonl=text, on_conflict=on_conflict)
            if not result["success"]:
                before = f" ({document['session_count']} sessions before it were imported)"
                return _error(f"{path} line {line}: session {owner}/{session_id}: {result['error']}"
                              f"{before if document['session_count'] else ''}", result["metadata"]["error_code"])
            tracker.advance(count)
            document["sessions"].append({"user_id": owner, **result["data"]})
            document["session_count"] += 1
            for key in ("imported", "skipped", "message_count"):
                document[key] += result["data"][key]
    return EXIT_OK, _with_single_session(document), _import_text(document)


def _check_file(path: str, user: str | None, max_message_bytes: int) -> list[tuple[str, str, int]]:
    """(user, session id, message count) of each session in the file, in order; raises InvalidInput
    naming the line of the first problem."""
    plan: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for line, text in _sections(path):
        header, messages = transfer.parse_jsonl(text, max_message_bytes, first_line=line)
        transfer.header_fields(header, line)
        try:
            owner = validate_id(user if user is not None else header.get("user_id"), "user")
            session_id = validate_id(header.get("session_id"), "session")
        except InvalidInput as exc:
            raise InvalidInput(f"line {line}: {exc.message}", exc.code) from None
        if (owner, session_id) in seen:
            raise InvalidInput(f"line {line}: session {owner}/{session_id} appears twice in the file",
                               "INVALID_ARGUMENT")
        seen.add((owner, session_id))
        plan.append((owner, session_id, len(messages)))
    if not plan:
        raise InvalidInput("line 1: missing session header", "INVALID_ARGUMENT")
    return plan


def _sections(path: str) -> Iterator[tuple[int, str]]:
    """The file's sessions, read line by line (lines end at "\\n" only, as parse_jsonl splits them)."""
    try:
        with open(path, encoding="utf-8", newline="\n") as handle:
            yield from transfer.sessions_of(handle)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not valid UTF-8 ({exc.reason})", "INVALID_ARGUMENT") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read: {exc.strerror or exc}", "INVALID_ARGUMENT") from None


def _with_single_session(document: dict[str, Any]) -> dict[str, Any]:
    """A one-session import also answers with that session's id, as `import` always did."""
    if document["session_count"] == 1:
        return {"session_id": document["sessions"][0]["session_id"], **document}
    return document


def _import_text(document: dict[str, Any]) -> str:
    if document["session_count"] == 1:
        return f"imported {document['imported']} messages into session {document['sessions'][0]['session_id']}"
    users = len({session["user_id"] for session in document["sessions"]})
    return (f"imported {document['imported']} messages into {document['session_count']} sessions of {users} "
            f"users ({document['skipped']} were already there)")
