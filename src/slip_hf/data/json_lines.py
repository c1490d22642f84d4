"""JSON-lines files read block by block with pyarrow's parser, and every bad line found and numbered.

A *bad line* is a non-blank line that is not one JSON object whose fields have the schema's types: broken
JSON, the cut-off last line of an interrupted download, an array or a bare value, a string where a number
belongs, two objects on one line, invalid UTF-8. Blank lines are ignored, as pandas does. `on_bad_lines`
takes pandas' values: `"error"` stops at the first bad line with its file and line number, `"skip"` skips
and counts them ([`BadLines`]).

The fast path costs a clean file nothing: a block of whole lines (16 MB, 4 MB for gzip) at a time is parsed
by one call of pyarrow's C++ reader (multi-threaded, with an explicit schema, so other fields are never
materialised), while a background thread reads (and decompresses) the next block and finds its line ends. A block is clean when
the parse succeeds, gives exactly one row per non-blank line and its strings are valid UTF-8. A block that
is not clean is split in halves until each bad line stands alone, a binary search: k bad lines among n
cost O(k log n) parses of ever smaller pieces. The count and the line numbers are exact.

A gzip stream that ends early (an interrupted download) still yields every line it holds. pyarrow's
decompressor drops the last piece of such a stream, so the tail is decompressed again with `zlib`; the
cut-off last line is then a bad line like any other, and [`BadLines.truncated`] records the early end.
"""

import logging
import queue
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

ON_BAD_LINES = ("error", "skip")
"""Values of `on_bad_lines` (pandas' names and meanings)."""

BLOCK_BYTES = {"plain": 16 << 20, "gzip": 4 << 20}
"""Bytes of whole lines handed to the parser at once (measured best on 2 cores: gzip streams keep the
decompressing thread and the parser busier with smaller blocks)."""

_PARSER_BLOCK_BYTES = 1 << 20  # pyarrow's own split of a block across its threads
_READ_BYTES = 4 << 20
_PREFETCH_DEPTH = 4
_SLACK_BYTES = 1 << 20  # room for the part line carried into the next block
_MAX_EXAMPLES = 5
_ROW_SUFFIX = re.compile(r" in row \d+$")
_WHITESPACE = b" \t\r\n"  # JSON's whitespace


def check_on_bad_lines(value: str) -> None:
    """Raises `ValueError` unless `value` is one of [`ON_BAD_LINES`]."""
    if value not in ON_BAD_LINES:
        raise ValueError(f"on_bad_lines must be one of {', '.join(ON_BAD_LINES)}, got {value!r}.")


class BadLineError(ValueError):
    """A bad line met with `on_bad_lines="error"`; the message names the file and the line."""


@dataclass
class BadLines:
    """The bad lines of one file: what to do with them and, with `"skip"`, how many were skipped.

    Attributes:
        path (`str`): the file.
        on_bad_lines (`str`): `"error"` raises [`BadLineError`] at the first bad line; `"skip"` counts it.
        count (`int`): bad lines skipped.
        examples (`list[str]`): the first few, as `"line N: reason"`.
        truncated (`bool`): the file is a gzip stream that ends early (an interrupted download).
    """

    path: str
    on_bad_lines: str = "error"
    count: int = 0
    examples: list[str] = field(default_factory=list)
    truncated: bool = False

    def __post_init__(self):
        check_on_bad_lines(self.on_bad_lines)

    def add(self, line_number: int, reason: str) -> None:
        """Record one bad line (1-based number); raises [`BadLineError`] with `"error"`."""
        if self.on_bad_lines == "error":
            raise BadLineError(
                f"{self.path}: line {line_number}: {reason}; --on_bad_lines skip skips and counts such lines."
            )
        self.count += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"line {line_number}: {reason}")

    def ended_early(self, last_line: int) -> None:
        """The gzip stream ends right after line `last_line` (a whole line): no line is lost that can be
        counted, but the file is incomplete."""
        self.truncated = True
        if self.on_bad_lines == "error":
            raise BadLineError(
                f"{self.path}: the gzip stream ends early, after line {last_line} (an interrupted download?); "
                "--on_bad_lines skip reads the lines it holds."
            )
        logger.warning("%s: the gzip stream ends early, after line %d (an interrupted download?)", self.path, last_line)

    def as_dict(self) -> dict:
        return {"file": Path(self.path).name, "skipped": self.count, "examples": self.examples, "truncated": self.truncated}


def _nonblank_lines(data: memoryview, newlines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the non-blank lines of `data` are: `(starts, ends, indices among all lines)`, given where its
    newlines are. A blank line holds JSON whitespace only; only lines that do not open with "{" are looked at
    byte by byte."""
    text = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    if starts[-1] == len(data):  # `data` ends with a newline: no line after it
        starts, ends = starts[:-1], ends[:-1]
    suspects = np.flatnonzero((ends == starts) | (text[np.minimum(starts, len(data) - 1)] != 123))
    keep = np.ones(starts.size, dtype=bool)
    keep[suspects] = [bool(bytes(data[start:end]).strip(_WHITESPACE)) for start, end in zip(starts[suspects], ends[suspects])]
    keep = np.flatnonzero(keep)
    return starts[keep], ends[keep], keep


class JsonLinesBlock:
    """The good lines of one block of a file, parsed. Its raw lines ([`line`]) are valid until the reader
    moves to the next block (their buffer is then reused); `table` and `bad` stay valid.

    Attributes:
        table (`pa.Table`): one row per good line, in file order, with the reader's schema.
        bad (`list[tuple[int, bytes]]`): the block's skipped bad lines, `(line number, line)`.
    """

    def __init__(self, table: pa.Table, bad: list[tuple[int, bytes]], block: "_LineBlock", rows: np.ndarray | None, lines=None):
        self.table, self.bad = table, bad
        self._block, self._rows, self._lines = block, rows, lines

    def _positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._lines is None:  # computed on demand: a clean block's reader never needs them
            self._lines = _nonblank_lines(self._block.data, self._block.newlines)
        if self._rows is not None:
            self._lines = tuple(column[self._rows] for column in self._lines)
            self._rows = None
        return self._lines

    def line(self, row: int) -> bytes:
        """The raw text of row `row`'s line."""
        starts, ends, _ = self._positions()
        return bytes(self._block.data[starts[row]:ends[row]])

    @property
    def line_numbers(self) -> np.ndarray:
        """The 1-based line number of each row, shape `(table.num_rows,)`."""
        return self._block.first_line + self._positions()[2]


class _Source:
    """A file's decompressed bytes. A gzip stream that ends early switches to `zlib` for its tail and sets
    `truncated`."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = pa.OSFile(str(path))
        self.gzip = path.suffix == ".gz"
        self.stream = pa.CompressedInputStream(self.raw, "gzip") if self.gzip else self.raw
        self.truncated = False
        self.delivered = 0
        self.tail: Iterator[bytes] | None = None
        self.leftover = b""

    def readinto(self, view: memoryview) -> int:
        """Fill `view`; fewer bytes only at the end of the data."""
        filled = 0
        while filled < len(view):
            if self.tail is None:
                try:
                    count = self.stream.readinto(view[filled:])
                except OSError as error:
                    if not self.gzip or "truncated" not in str(error).lower():
                        raise ValueError(f"{self.path}: not a readable gzip file ({error}).") from error
                    self.truncated, self.tail = True, self._zlib_tail(self.delivered)
                    continue
                self.delivered += count
            else:
                self.leftover = self.leftover or next(self.tail, b"")
                count = min(len(self.leftover), len(view) - filled)
                view[filled:filled + count] = self.leftover[:count]
                self.leftover = self.leftover[count:]
            if count == 0:
                break
            filled += count
        return filled

    def compressed_bytes_read(self) -> int:
        return self.raw.tell()

    def _zlib_tail(self, skip: int) -> Iterator[bytes]:
        """The decompressed bytes after the first `skip`, as far as the (truncated) stream goes."""
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        with open(self.path, "rb") as raw:
            while chunk := raw.read(_READ_BYTES):
                while chunk:
                    piece = decompressor.decompress(chunk)
                    chunk = decompressor.unused_data if decompressor.eof else b""
                    if decompressor.eof:  # a multi-member file: the next member starts
                        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
                    piece, skip = piece[skip:], max(0, skip - len(piece))
                    if piece:
                        yield piece
        if piece := decompressor.flush()[skip:]:
            yield piece

    def close(self) -> None:
        self.stream.close()
        self.raw.close()


@dataclass
class _LineBlock:
    """Whole lines, how many (blank ones included), whether each starts with "{", and the file's line number
    of the first."""

    data: memoryview
    num_lines: int
    newlines: np.ndarray  # positions of the newlines in `data`
    objects_only: bool  # every line starts with "{": no line is blank
    first_line: int
    last: bool
    compressed_bytes_read: int
    buffer: bytearray  # what `data` views, reused once the block is done with


def _line_blocks(source: _Source, block_bytes: int, spare: queue.SimpleQueue) -> Iterator[_LineBlock]:
    """Blocks of about `block_bytes` of whole lines. Buffers put back into `spare` are filled again (a fresh
    16 MB buffer per block costs more in page faults than the newline scan)."""
    rest = b""
    first_line = 1
    mask = np.empty(0, dtype=bool)
    while True:
        try:
            buffer = spare.get_nowait()
        except queue.Empty:
            buffer = bytearray(block_bytes + _SLACK_BYTES)
        if len(buffer) < len(rest) + block_bytes:  # a line longer than a block
            buffer = bytearray(len(rest) + block_bytes)
        buffer[:len(rest)] = rest
        size = len(rest) + source.readinto(memoryview(buffer)[len(rest):len(rest) + block_bytes])
        last = size < len(rest) + block_bytes
        cut = size if last else buffer.rfind(b"\n", 0, size) + 1
        if cut == 0 and not last:  # one line longer than a block: read on
            rest = memoryview(buffer)[:size]
            continue
        data = memoryview(buffer)[:cut]
        if mask.size < cut:
            mask = np.empty(cut, dtype=bool)
        text = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(np.equal(text, 10, out=mask[:cut]))
        line_starts = newlines[newlines < cut - 1] + 1  # the final newline starts no line
        num_lines = line_starts.size + (1 if cut else 0)
        objects_only = bool(cut) and text[0] == 123 and bool(np.all(text[line_starts] == 123))  # every line opens with "{"
        rest = bytes(buffer[cut:size])
        yield _LineBlock(data, num_lines, newlines, objects_only, first_line, last, source.compressed_bytes_read(), buffer)
        if last:
            return
        first_line += num_lines


def _prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """`iterator`'s items, produced by a background thread up to `depth` ahead (file reading, gzip and numpy
    release the GIL, so this overlaps with parsing); its exceptions are raised here."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as error:  # handed to the consumer
            put((done, error))

    thread = threading.Thread(target=produce, daemon=True, name="json-lines-reader")
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def _parse(data: memoryview, schema: pa.Schema, block_bytes: int) -> pa.Table | str:
    """The rows of `data`, or why it cannot be parsed."""
    try:
        table = pa_json.read_json(
            pa.py_buffer(data),
            read_options=pa_json.ReadOptions(block_size=block_bytes),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid as error:
        return _ROW_SUFFIX.sub("", str(error))
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        return "invalid UTF-8"
    return table


def _good_pieces(data: memoryview, lines: tuple, schema: pa.Schema, low: int, high: int, pieces: list, bad: list) -> None:
    """Parse the non-blank lines `low:high` of `data`; clean ranges go to `pieces`, bad lines to `bad`."""
    starts, ends, _ = lines
    piece = data[starts[low]:ends[high - 1]]
    parsed = _parse(piece, schema, len(piece) + 1)
    if not isinstance(parsed, str) and parsed.num_rows == high - low:
        pieces.append((parsed, low, high))
        return
    if high - low == 1:
        bad.append((low, parsed if isinstance(parsed, str) else "not one JSON object"))
        return
    middle = (low + high) // 2
    _good_pieces(data, lines, schema, low, middle, pieces, bad)
    _good_pieces(data, lines, schema, middle, high, pieces, bad)


def _parse_block(block: _LineBlock, schema: pa.Schema, bad_lines: BadLines, truncated: bool) -> JsonLinesBlock:
    """The good lines of `block`; its bad lines go to `bad_lines`."""
    parsed = _parse(block.data, schema, _PARSER_BLOCK_BYTES)
    clean = not isinstance(parsed, str)
    if clean and block.objects_only and parsed.num_rows == block.num_lines:  # the fast path: one object per line
        return JsonLinesBlock(parsed, [], block, None)
    lines = _nonblank_lines(block.data, block.newlines)
    starts, ends, offsets = lines
    if clean and parsed.num_rows == starts.size:  # blank lines only (a visible line gives one row or more)
        return JsonLinesBlock(parsed, [], block, None, lines)
    pieces: list[tuple[pa.Table, int, int]] = []
    bad: list[tuple[int, str]] = []
    if starts.size:
        _good_pieces(block.data, lines, schema, 0, starts.size, pieces, bad)
    ends_early = block.last and truncated
    cut_off = ends_early and block.data[-1] != ord("\n") and bool(bad) and bad[-1][0] == starts.size - 1
    bad_lines.truncated |= cut_off
    skipped = []
    for index, reason in bad:
        if cut_off and index == starts.size - 1:
            reason = "cut off: the gzip stream ends early (an interrupted download?)"
        number = block.first_line + int(offsets[index])
        bad_lines.add(number, reason)
        skipped.append((number, bytes(block.data[starts[index]:ends[index]])))
    rows = np.concatenate([np.arange(low, high) for _, low, high in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    table = pa.concat_tables([table for table, _, _ in pieces]) if pieces else schema.empty_table()
    return JsonLinesBlock(table, skipped, block, rows, lines)


def read_json_lines(
    path: str | Path, schema: pa.Schema, bad_lines: BadLines | None = None, block_bytes: int | None = None
) -> Iterator[JsonLinesBlock]:
    """The good lines of a JSON-lines file (`.jsonl` or `.jsonl.gz`), block by block, parsed with `schema`
    (fields not in it are skipped).

    Args:
        path: the file.
        schema: the fields to read and their types; a line whose field has another type is bad.
        bad_lines: where bad lines are counted, and whether they raise; default: raise at the first one.
        block_bytes: bytes of whole lines parsed at once; default: [`BLOCK_BYTES`].

    Raises:
        BadLineError: at the first bad line with `on_bad_lines="error"`, naming the file and the line.
        ValueError: a `.gz` file that is not gzip.
    """
    path = Path(path)
    bad_lines = bad_lines or BadLines(str(path))
    source = _Source(path)
    block_bytes = block_bytes or BLOCK_BYTES["gzip" if source.gzip else "plain"]
    try:
        with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"read {path.name}", leave=False) as bar:
            spare: queue.SimpleQueue = queue.SimpleQueue()
            blocks = _prefetch(_line_blocks(source, block_bytes, spare), _PREFETCH_DEPTH)
            for block in blocks:
                bar.update(block.compressed_bytes_read - bar.n)
                parsed = _parse_block(block, schema, bad_lines, source.truncated)
                if block.last and source.truncated and not bad_lines.truncated:  # the stream ends between two lines
                    bad_lines.ended_early(block.first_line + block.num_lines - 1)
                yield parsed
                del parsed
                spare.put(block.buffer)  # the caller is done with this block's lines
    finally:
        source.close()


__all__ = ["BLOCK_BYTES", "ON_BAD_LINES", "BadLineError", "BadLines", "JsonLinesBlock", "check_on_bad_lines", "read_json_lines"]
