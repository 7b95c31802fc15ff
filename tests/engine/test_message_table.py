"""The compact message table of a session against a plain list: every read, lookup and removal agrees,
whatever mix of batch sizes, seals and removals, also when message ids collide on their keys."""

import random

import numpy as np
import pytest

from engine import message_table
from engine.message_table import CHUNK_MESSAGES, MessageTable, StoredMessage


def _row(number: int, rng: random.Random) -> list:
    content = "é" * rng.randint(0, 3) + f"message {number} " + "x" * rng.randint(0, 300)
    attachments = [f"file{number}.txt"] if number % 7 == 0 else None
    metadata = {"n": number, "nested": {"k": [1, 2]}} if number % 5 == 0 else None
    return [f"id{number}", ("user", "assistant", "system", "tool")[number % 4], content,
            f"2026-01-01T00:00:{number % 60:02d}+00:00", attachments, metadata, "2026-01-01T00:00:00+00:00"]


def _check(table: MessageTable, model: list[StoredMessage], rng: random.Random) -> None:
    assert len(table) == len(model)
    assert list(table) == model
    assert table.epochs().tolist() == [m.timestamp_epoch for m in model]
    assert table.roles() == [m.role for m in model]
    assert table.content_bytes == sum(len(m.content.encode()) for m in model)
    for _ in range(20):
        if not model:
            break
        start = rng.randrange(len(model))
        stop = start + rng.randint(0, 150)
        assert table.slice(start, stop) == model[start:stop] == table[start:stop]
        position = rng.randrange(len(model))
        assert table[position] == model[position] and table[-1] == model[-1]
        assert table.position_of(model[position].message_id) == position
    assert table.position_of("absent") is None
    wanted = [m.message_id for m in rng.sample(model, min(len(model), 30))] + ["absent", "id-none"]
    assert table.positions_of(wanted) == {m.message_id: p for p, m in enumerate(model) if m.message_id in wanted}
    assert [r for r in table.raw_rows()] == [[m.message_id, m.role, m.content, m.timestamp, m.attachments,
                                              m.metadata, m.stored_at] for m in model]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("colliding", [False, True])
def test_table_reads_like_a_list(seed, colliding, monkeypatch):
    if colliding:  # every id shares one of three keys: lookups must confirm against the rows
        monkeypatch.setattr(message_table, "key_of", lambda message_id: len(message_id) % 3)
    rng = random.Random(seed)
    table, model, number = MessageTable(), [], 0
    for step in range(40):
        action = rng.random()
        if action < 0.6:
            rows = [_row(number + i, rng) for i in range(rng.choice([1, 2, 5, 63, 64, 65, 200, 1500]))]
            number += len(rows)
            epochs = [float(i % 60) + 1_767_225_600.0 for i in range(number - len(rows), number)]
            table.extend(rows, epochs)
            model.extend(StoredMessage(*r[:4], e, *r[4:]) for r, e in zip(rows, epochs))
        elif action < 0.75:
            table.seal()
        elif model:
            removal = rng.choice(["scattered", "a run", "nothing", "everything"])
            if removal == "scattered":
                keep = np.array([rng.random() < 0.8 for _ in model])
            elif removal == "a run":  # whole chunks go, whole chunks stay, the ones at the edges split
                first = rng.randrange(len(model))
                end = first + rng.randint(1, 300)
                keep = np.array([not first <= i < end for i in range(len(model))])
            else:
                keep = np.full(len(model), removal == "nothing")
            removed = table.keep_where(keep)
            assert removed == [m for m, k in zip(model, keep) if not k]
            model = [m for m, k in zip(model, keep) if k]
        if step % 5 == 0:
            _check(table, model, rng)
    _check(table, model, rng)
    assert table.sealed >= len(model) - CHUNK_MESSAGES or table.sealed == 0


def test_ram_does_not_hold_a_python_object_per_sealed_message():
    """Sealed messages cost their columns and compressed row, not a tuple of strings each."""
    table = MessageTable()
    rows = [[f"msg_{i:024x}", "user", f"message {i} about the tram near the river", "2026-01-01T00:00:00+00:00",
             None, None, "2026-01-01T00:00:00+00:00"] for i in range(10_000)]
    table.extend(rows, [1_767_225_600.0] * len(rows))
    table.seal()
    assert table.sealed == 10_000
    assert table.ram_bytes() / 10_000 < 80


def test_a_lookup_scans_a_bounded_rest_whatever_the_size_of_the_session():
    """Keys not merged into the sorted copy stay at most REST_MAX (a lookup scans them; the rest is
    found by bisection), whether messages come one by one or in big batches."""
    from engine.message_table import REST_MAX
    table = MessageTable()
    stamp = "2026-01-01T00:00:00+00:00"
    for batch in [1] * 5000 + [50_000, 3, 20_000] + [1] * 4200:
        start = len(table)
        table.extend([[f"id-{i}", "user", "x", stamp, None, None, stamp] for i in range(start, start + batch)],
                     [0.0] * batch)
        assert len(table) - table._sorted_at <= REST_MAX
    for position in (0, 4999, 5000, 55_002, len(table) - 1):
        assert table.position_of(f"id-{position}") == position
    assert table.positions_of([f"id-{p}" for p in range(0, len(table), 997)] + ["nope"]) == \
        {f"id-{p}": p for p in range(0, len(table), 997)}


def test_large_messages_make_small_chunks_and_the_decoded_cache_stays_within_its_bytes():
    """A chunk ends at CHUNK_BYTES of content as well as at CHUNK_MESSAGES rows, so reading one large
    message decodes few others; the decoded-chunk cache is bounded by decoded size, not count."""
    from engine.message_table import CHUNK_BYTES, DECODED_BYTES, decoded_chunks
    stamp = "2026-01-01T00:00:00+00:00"
    table = MessageTable()
    big = "y" * (CHUNK_BYTES // 3)
    table.extend([[f"b{i}", "user", f"{i} {big}", stamp, None, None, stamp] for i in range(300)], [0.0] * 300)
    assert table.sealed >= 297 and len(table._chunks) >= 99  # three of these per chunk
    for position in range(0, 300, 7):
        assert table[position].content.startswith(f"{position} ")
    assert decoded_chunks.bytes <= DECODED_BYTES
