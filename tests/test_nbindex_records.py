"""The planning index's plain form of a record, and the probe's threaded stats of batch files.

Generated records of every shape (statuses, batches, outputs, steps, discovered modules,
nested spec values of every JSON type) come back from the plain form (through marshal, as
the index stores it) as the record they were, field by field and as JSON text; the threaded
stat of batch files finds exactly what the sequential one finds, in the same order.
"""

from __future__ import annotations

import json
import marshal
import os
import random
from pathlib import Path
from typing import Any

import pytest

from buildtool import probe
from buildtool.fingerprint import FileState
from buildtool.records import (
    RECORD_STATUSES,
    BatchEntry,
    Discovered,
    Output,
    PlainBatches,
    StageRecord,
    batch_stats,
    batches_digest,
    read_record,
    record_from_plain,
    record_plain,
    write_record,
)


def _value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "bool", "null", "str", "bigint", "negzero"]
    if depth < 3:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-5, 5)
    if kind == "bigint":
        return rng.randint(2**62, 2**70)
    if kind == "float":
        return rng.choice([1.0, 2.5, 1e300, -1e-300])
    if kind == "negzero":
        return -0.0
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "str":
        return rng.choice(["", "1", "true", "é ✓", "a\nb"])
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b", "1", "ü"]): _value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _state(rng: random.Random, path: str) -> FileState:
    return FileState(path, rng.randint(0, 10**9), rng.randint(-(2**40), 2**62),
                     f"sha256:{rng.getrandbits(256):064x}")


def _output(rng: random.Random, kind: str) -> Output:
    files = tuple(_state(rng, f"out/{kind}-{i}.parquet") for i in range(rng.randint(0, 2)))
    return Output(kind, rng.choice([None, 0, 7]), f"sha256:{rng.getrandbits(256):064x}", files,
                  rng.choice([None, "key"]))


def random_record(rng: random.Random) -> StageRecord:
    batches = tuple(BatchEntry(i, f"s/batches/batch-{i:06d}.parquet", rng.randint(0, 9),
                               rng.randint(0, 10**6), rng.randint(0, 2**62),
                               f"sha256:{rng.getrandbits(256):064x}")
                    for i in sorted(rng.sample(range(50), rng.randint(0, 6))))
    discovered = rng.choice([None, {}, {
        "helpers/a.py": Discovered(_state(rng, "helpers/a.py"), rng.choice([None, "x.py"])),
        "dist:pyyaml": Discovered(_state(rng, "dist:pyyaml"), None, "yaml")}])
    return StageRecord(
        stage="s", status=rng.choice(RECORD_STATUSES), kind=rng.choice(["generate", "run"]),
        spec={"kind": "generate", "params": _value(rng), "outputs": [_value(rng)]},
        spec_fingerprint=f"sha256:{rng.getrandbits(256):064x}",
        code={"code/x.py": _state(rng, "code/x.py")},
        file_inputs=rng.choice([{}, {"data/a.txt": _state(rng, "data/a.txt")}]),
        stage_inputs=rng.choice([{}, {"up": "sha256:00"}]), run_id="r1",
        batches=batches, batches_total=rng.choice([None, len(batches), 60]),
        num_records=rng.choice([None, 0, 600]),
        output=rng.choice([None, _output(rng, "batches"), _output(rng, "override")]),
        steps=rng.choice([{}, {"processed": _output(rng, "processed"),
                               "exports": _output(rng, "exports")}]),
        started_at=rng.choice([None, 1.5]), finished_at=rng.choice([None, 2.25]),
        batches_run=rng.randint(0, 3), error=rng.choice([None, "boom\nhint"]),
        journal=rng.choice([None, "journal-r1.jsonl"]), extra=rng.choice([{}, {"stopped_in":
                                                                          "on_success"}]),
        discovered=discovered)


def _text(record: StageRecord) -> str:
    return json.dumps(record.to_json(), sort_keys=True)


@pytest.mark.parametrize("seed", range(300))
def test_a_record_comes_back_from_its_plain_form(seed: int) -> None:
    record = random_record(random.Random(seed))
    back = record_from_plain(marshal.loads(marshal.dumps(record_plain(record))))
    assert back == record
    assert _text(back) == _text(record)  # types too: 1, 1.0, true and -0.0 stay apart
    assert isinstance(back.batches, PlainBatches)
    assert len(back.batches) == len(record.batches)
    assert list(batch_stats(back.batches)) == [(b.file, b.size, b.mtime_ns)
                                                for b in record.batches]
    assert batches_digest(back.batches) == batches_digest(record.batches)
    assert tuple(back.batches) == record.batches and back.batches == record.batches
    assert record_plain(back) == record_plain(record)  # and again, without a BatchEntry


def test_a_record_read_from_its_file_equals_its_plain_form(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(40):
        record = random_record(rng)
        folder = tmp_path / str(i)
        folder.mkdir()
        write_record(folder, record)
        read = read_record(folder).record
        assert read is not None
        if read.status == "running" and read.journal:
            continue  # merged with its (missing) journal: the index never holds these
        assert record_from_plain(marshal.loads(marshal.dumps(record_plain(read)))) == read


@pytest.mark.parametrize("bad", [
    lambda t: t[:-1],  # a field short
    lambda t: (*t[:9], ((), b"\0" * 8, b"", b"", ""), *t[10:]),  # columns of other lengths
    lambda t: (*t[:1], "finished", *t[2:]),  # an unknown status
    lambda t: (*t[:9], ("f",), *t[10:]),  # batches of another shape
])
def test_a_plain_form_of_another_shape_raises_what_the_index_catches(bad: Any) -> None:
    plain = record_plain(random_record(random.Random(1)))
    with pytest.raises((TypeError, ValueError, IndexError, KeyError)):
        record_from_plain(bad(plain))


def _batch_records(root: Path, rng: random.Random) -> list[StageRecord | None]:
    records: list[StageRecord | None] = []
    for s in range(12):
        batches = []
        for i in range(rng.randint(0, 30)):
            rel = f"s{s}/batches/batch-{i:06d}.parquet"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * rng.randint(1, 20))
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
            fate = rng.random()
            if fate < 0.1:
                path.unlink()
            elif fate < 0.2:
                size += 1
            elif fate < 0.3:
                mtime -= 1
            batches.append(BatchEntry(i, rel, 1, size, mtime, "sha256:0"))
        plain = rng.random() < 0.5
        record = random_record(rng)
        records.append(None if s == 3 else StageRecord(
            **{**record.__dict__, "batches": PlainBatches.of(batches) if plain else
               tuple(batches)}))
    return records


def test_threaded_stats_find_what_sequential_ones_find(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    records = _batch_records(tmp_path, random.Random(3))
    root = str(tmp_path) + os.sep
    monkeypatch.setattr(probe, "_THREADED_FROM", 10**9)
    sequential = probe._stat_batches(root, records)
    monkeypatch.setattr(probe, "_THREADED_FROM", 1)
    monkeypatch.setattr(probe, "_THREADS", 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    threaded = probe._stat_batches(root, records)

    def shown(found: list[Any]) -> list[Any]:
        return [[(f, None if st is None else (st.st_size, st.st_mtime_ns)) for f, st in one]
                for one in found]

    assert shown(threaded) == shown(sequential)
    assert any(st is None for one in sequential for _, st in one)  # missing ones were seen
    assert any(st is not None for one in sequential for _, st in one)  # and changed ones


def test_an_error_in_a_stat_thread_is_raised_in_the_caller(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    records = _batch_records(tmp_path, random.Random(4))
    bad = BatchEntry(0, "nul\0byte", 1, 1, 1, "sha256:0")
    records.append(StageRecord(**{**random_record(random.Random(5)).__dict__,
                                  "batches": (bad,)}))
    monkeypatch.setattr(probe, "_THREADED_FROM", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with pytest.raises(ValueError):
        probe._stat_batches(str(tmp_path) + os.sep, records)
