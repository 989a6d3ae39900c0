"""Issue 11 item 2, the pieces: batch keys in records, journals and the planning index."""

from __future__ import annotations

import json

import pyarrow as pa

from buildtool.growth import batch_key, rows_digest, size_at
from buildtool.records import BatchEntry, PlainBatches, batch_line


def _entry(i: int, key: str = "", reads: tuple[str, ...] = ()) -> BatchEntry:
    return BatchEntry(i, f"s/batches/batch-{i:06d}.parquet", 3, 100 + i, 7, f"sha256:{i}",
                      key, reads)


def test_keys_and_reads_round_trip_through_json_journal_lines_and_the_index() -> None:
    entries = [_entry(0, "sha256:k0"), _entry(1, "sha256:k1", ("num_records",)),
               _entry(2, "sha256:k2", ("num_records", "seed")), _entry(3)]
    for e in entries:
        assert BatchEntry.from_json(json.loads(batch_line(e))) == e
        assert BatchEntry.from_json(e.to_json()) == e
        assert json.loads(batch_line(e)) == e.to_json()
    plain = PlainBatches.of(entries)
    assert tuple(PlainBatches(*plain.plain())) == tuple(entries)


def test_a_record_line_without_a_key_reads_as_keyless() -> None:
    old = {"index": 0, "file": "f", "rows": 1, "bytes": 2, "mtime_ns": 3, "digest": "d"}
    assert BatchEntry.from_json(old) == BatchEntry(0, "f", 1, 2, 3, "d", "", ())


def test_batch_key_holds_what_differs_per_batch() -> None:
    base = batch_key(3, 30, 10, None, None)
    assert base == batch_key(3, 30, 10, None, None)
    others = [batch_key(4, 30, 10, None, None), batch_key(3, 31, 10, None, None),
              batch_key(3, 30, 9, None, None), batch_key(3, 30, 10, "sha256:x", None),
              batch_key(3, 30, 10, None, 600), batch_key(3, 30, 10, None, None, "sha256:s")]
    assert len({base, *others}) == len(others) + 1


def test_rows_digest_ignores_chunks_and_metadata_but_not_values_or_types() -> None:
    t = pa.table({"x": [1, 2, 3]})
    chunked = pa.concat_tables([t.slice(0, 1), t.slice(1)])
    assert rows_digest(t) == rows_digest(chunked)
    assert rows_digest(t) == rows_digest(t.replace_schema_metadata({"pandas": "x"}))
    assert rows_digest(t) != rows_digest(pa.table({"x": [1, 2, 4]}))
    assert rows_digest(t) != rows_digest(pa.table({"x": [1.0, 2.0, 3.0]}))
    assert rows_digest(None) is None


def test_size_at_gives_each_batch_its_rows() -> None:
    assert [size_at(i, 20, 605) for i in (0, 29, 30, 31)] == [20, 20, 5, 0]
