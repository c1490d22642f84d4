"""Bad lines in raw JSON-lines files: found, numbered and counted exactly (block edges, blank and CRLF lines,
two objects on a line, invalid UTF-8, a gzip stream cut off mid-line or between lines), an error that names
file and line, and `--on_bad_lines skip` counts in the step table, `stats/<config>.json` and the card."""

import gzip
import json
import random
import zlib

import pytest

from slip_hf.cli import main
from slip_hf.data import BuildConfig, build_dataset, generate_synthetic_raw, summary_table
from slip_hf.data.amazon_raw import REVIEW_SCHEMA, read_item_metadata
from slip_hf.data.json_lines import BadLineError, BadLines, read_json_lines

BAD_KINDS = [
    b'{"user_id": "u1", "parent_asin": ',  # broken JSON
    b"garbage",
    b"[1, 2]",  # an array, not an object
    b'"just a string"',
    b'{"user_id": 5}',  # a number where a string belongs
    b'{"user_id": "a", "timestamp": 1.5}',  # a fraction where an int64 belongs
    b'{"user_id": "a", "timestamp": "soon"}',
    b'{"user_id": "\xff\xfe"}',  # invalid UTF-8
    b'{"user_id": "a"} {"user_id": "b"}',  # two objects on one line
]
BLANK_KINDS = [b"", b"   ", b"\r", b" \t "]


def _review(i: int, rng: random.Random) -> bytes:
    return json.dumps({"user_id": f"U{i}", "parent_asin": f"B{i % 37}", "timestamp": 1000 + i, "verified_purchase": True,
                       "helpful_vote": 0, "text": "x" * rng.randint(0, 400), "details": {"nested": [1, {"a": None}]}}).encode()


def _planted_file(count: int = 6000, seed: int = 0) -> tuple[list[bytes], list[int]]:
    """Lines with every bad and blank kind planted at random places (a blank next to a double-object line
    too), and the 1-based numbers of the bad ones."""
    rng = random.Random(seed)
    lines, bad = [], []
    for i in range(count):
        draw = rng.random()
        if draw < 0.02:
            lines.append(rng.choice(BAD_KINDS))
            bad.append(len(lines))
        elif draw < 0.04:
            lines.append(rng.choice(BLANK_KINDS))
        else:
            lines.append(_review(i, rng))
    lines[100:102] = [BAD_KINDS[-1], b""]  # objects and lines balance out: 2 + 0 rows for 2 lines
    bad = sorted(set(bad + [101]) - {102})
    return lines, bad


def _read(path, block_bytes, on_bad_lines="skip"):
    """What the reader gives: counts, good rows' users, their line numbers and raw lines, the skipped lines."""
    bad_lines = BadLines(str(path), on_bad_lines)
    users, numbers, lines, skipped = [], [], [], []
    for block in read_json_lines(path, REVIEW_SCHEMA, bad_lines, block_bytes=block_bytes):
        users += block.table.column("user_id").to_pylist()
        numbers += block.line_numbers.tolist()
        lines += [block.line(row) for row in range(block.table.num_rows)]  # valid until the next block is read
        skipped += [number for number, _ in block.bad]
    return bad_lines, users, numbers, skipped, lines


@pytest.mark.parametrize("block_bytes", [2048, 65536, None])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_every_bad_line_is_found_numbered_and_counted_at_any_block_size(tmp_path, suffix, block_bytes):
    lines, bad = _planted_file()
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / f"reviews{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    bad_lines, users, numbers, skipped, raw = _read(path, block_bytes)
    good = [n for n, line in enumerate(lines, start=1) if line.strip() and n not in bad]
    assert skipped == bad and bad_lines.count == len(bad) and not bad_lines.truncated
    assert numbers == good  # every good row knows its line
    assert raw == [lines[n - 1] for n in good]
    assert users == [json.loads(lines[n - 1])["user_id"] for n in good]
    assert len(bad_lines.examples) == 5 and bad_lines.examples[0].startswith(f"line {bad[0]}: ")
    with pytest.raises(BadLineError, match=rf"reviews{suffix}: line {bad[0]}: .*--on_bad_lines skip"):
        _read(path, block_bytes, on_bad_lines="error")


def test_reasons_say_what_is_wrong(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join([BAD_KINDS[4], BAD_KINDS[7], BAD_KINDS[8], _review(1, random.Random(0))]) + b"\n")
    bad_lines, users, *_ = _read(path, None)
    assert users == ["U1"]
    assert bad_lines.examples == ["line 1: JSON parse error: Column(/user_id) changed from string to number",
                                  "line 2: invalid UTF-8", "line 3: not one JSON object"]


def _gzip_cut(tmp_path, data: bytes, keep: int) -> tuple:
    """`data` gzipped and cut to its first `keep` compressed bytes, with what a full decoder gets from them."""
    compressed = gzip.compress(data)[:keep]
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed)
    return path, zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(compressed)


def test_a_gzip_stream_cut_mid_line_keeps_every_whole_line_and_counts_the_cut_one(tmp_path):
    lines, bad = _planted_file(count=20000, seed=1)
    data = b"\n".join(lines) + b"\n"
    path, available = _gzip_cut(tmp_path, data, len(gzip.compress(data)) * 2 // 3)
    whole = available[:available.rfind(b"\n")].split(b"\n")  # pyarrow's own reader drops the last ~64 kB of these
    assert not available.endswith(b"\n")
    bad_lines, users, numbers, skipped, _ = _read(path, 1 << 16)
    expected = [n for n, line in enumerate(whole, start=1) if line.strip() and n not in bad]
    assert numbers == expected and len(users) == len(expected)
    assert skipped == [n for n in bad if n <= len(whole)] + [len(whole) + 1]
    assert bad_lines.truncated and bad_lines.count == len(skipped)
    clean = b"".join(_review(i, random.Random(i)) + b"\n" for i in range(300))
    path, available = _gzip_cut(tmp_path, clean, len(gzip.compress(clean)) - 20)
    cut_line = available.count(b"\n") + 1
    assert not available.endswith(b"\n") and cut_line < 300
    with pytest.raises(BadLineError, match=f"line {cut_line}: cut off: the gzip stream ends early"):
        _read(path, None, on_bad_lines="error")
    # a stream cut right after a whole line loses no line but is still reported
    path, available = _gzip_cut(tmp_path, clean, len(gzip.compress(clean)) - 4)  # without the trailer's length field
    assert available == clean
    bad_lines, users, *_ = _read(path, None)
    assert len(users) == 300 and bad_lines.count == 0 and bad_lines.truncated
    with pytest.raises(BadLineError, match="the gzip stream ends early, after line 300"):
        _read(path, None, on_bad_lines="error")


def test_multi_member_gzip_crlf_long_lines_empty_and_foreign_files(tmp_path):
    rows = [_review(i, random.Random(i)) for i in range(500)]
    path = tmp_path / "multi.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(rows[:200]) + b"\n") + gzip.compress(b"\n".join(rows[200:]) + b"\n"))
    assert len(_read(path, None)[1]) == 500
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\r\n".join(rows) + b"\r\n\r\n")
    assert _read(path, 4096)[1] == [f"U{i}" for i in range(500)]
    long_line = json.dumps({"user_id": "long", "text": "y" * 50000}).encode()
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(rows[:3] + [long_line] + rows[3:6]))  # no final newline either
    assert _read(path, 1024)[1] == ["U0", "U1", "U2", "long", "U3", "U4", "U5"]
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert _read(path, None)[1] == []
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(b"\n".join(rows))
    with pytest.raises(ValueError, match="plain.jsonl.gz: not a readable gzip file"):
        _read(path, None)


def test_a_reader_left_early_stops_its_thread(tmp_path):
    import threading

    rows = [_review(i, random.Random(i)) for i in range(3000)]
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    for _ in range(3):
        reader = read_json_lines(path, REVIEW_SCHEMA, block_bytes=4096)
        next(reader)
        reader.close()
    threading.Event().wait(0.5)
    assert not [t for t in threading.enumerate() if t.name == "json-lines-reader" and t.is_alive()]


def test_metadata_bad_lines_are_counted_and_wanted_items_marked_malformed(tmp_path):
    meta = [json.dumps({"parent_asin": f"A{i}", "title": f"item {i}", "details": {"x": [i]}}).encode() for i in range(50)]
    meta[10] = b'{"parent_asin": "A10", "title": "cut'  # wanted and broken
    meta[20] = b'{"parent_asin": "A20", "title": 7'  # broken, not wanted
    meta[30] = b"not json at all"
    path = tmp_path / "meta.jsonl"
    path.write_bytes(b"\n".join(meta) + b"\n")
    bad_lines = BadLines(str(path), "skip")
    records = list(read_item_metadata(path, {"A1", "A10", "A49"}, bad_lines))
    assert [(r["parent_asin"], "_error" in r) for r in records] == [("A1", False), ("A10", True), ("A49", False)]
    assert records[0]["details"] == {"x": [1]} and bad_lines.count == 3
    with pytest.raises(BadLineError, match="meta.jsonl: line 11: "):
        list(read_item_metadata(path, {"A1"}))


@pytest.fixture(scope="module")
def broken_raw(tmp_path_factory):
    """Synthetic raw files (gzip) with 3 bad review lines planted and the review stream cut mid-line; the
    metadata holds the generator's one broken line."""
    raw = tmp_path_factory.mktemp("broken") / "raw"
    generate_synthetic_raw(raw, num_bundles=8, shoppers_per_bundle=200, image_size=16, compress=True, seed=3)
    reviews = raw / "review_categories" / "Electronics.jsonl.gz"
    lines = gzip.decompress(reviews.read_bytes()).split(b"\n")
    for position, line in ((5, b"garbage"), (len(lines) // 2, b'{"user_id": 12}'), (len(lines) // 2 + 7, b"[]")):
        lines.insert(position, line)
    compressed = gzip.compress(b"\n".join(lines))
    reviews.write_bytes(compressed[: len(compressed) - 40])  # an interrupted download: the last line is cut off
    return raw


def test_build_with_bad_lines_errors_in_one_line_or_skips_and_counts_them(broken_raw, tmp_path, capsys):
    arguments = ["build-dataset", "--raw-dir", str(broken_raw), "--out", str(tmp_path / "out"), "--image_size", "16",
                 "--min_class_size", "3", "--allow_local_files"]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().split("\r")[-1]  # after the progress bar (cleared on a terminal)
    assert err.startswith("slip-hf build-dataset: error: ") and "Electronics.jsonl.gz: line 6: " in err and "\n" not in err

    config = BuildConfig(raw_dir=str(broken_raw), out_dir=str(tmp_path / "out"), image_size=16, min_class_size=3,
                         allow_local_files=True, on_bad_lines="skip", download_workers=2)
    result = build_dataset(config)
    stats = json.loads((tmp_path / "out" / "stats" / "electronics.json").read_text())
    reviews, metadata = stats["bad_lines"]["reviews"], stats["bad_lines"]["metadata"]
    assert (reviews["skipped"], reviews["truncated"], metadata["skipped"]) == (4, True, 1)
    assert reviews["examples"][0].startswith("line 6: ") and "cut off" in reviews["examples"][-1]
    table = summary_table(result.steps)
    assert "bad lines skipped (Electronics.jsonl.gz, cut off): 4" in table
    assert "bad lines skipped (meta_Electronics.jsonl.gz): 1" in table
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Bad lines skipped (`on_bad_lines=skip`): reviews: 4 in `Electronics.jsonl.gz`" in card
    assert "metadata: 1 in `meta_Electronics.jsonl.gz`" in card and "`on_bad_lines=skip`" in card

    again = build_dataset(config)  # the second run reuses steps 1-3 and still reports the counts
    assert [record.reused for record in again.steps[:3]] == [True, True, True]
    assert summary_table(again.steps).count("bad lines skipped") == 2 and again.num_nodes == result.num_nodes
    with pytest.raises(BadLineError):  # asking for errors again does not reuse the skipping run's steps
        build_dataset(BuildConfig(**{**config.__dict__, "on_bad_lines": "error"}))


def test_on_bad_lines_takes_pandas_values(tmp_path):
    with pytest.raises(ValueError, match="on_bad_lines must be one of error, skip"):
        BuildConfig(out_dir=str(tmp_path), on_bad_lines="warn")
    with pytest.raises(ValueError, match="on_bad_lines must be one of error, skip"):
        BadLines("reviews.jsonl", "ignore")
