"""Column store of a dataset's files: paths as one UTF-8 blob, metadata as numpy arrays.

A million-row manifest as Python objects (a ``str`` and a ``VideoInfo`` per row) costs hundreds of MiB per
process, and every DataLoader worker forked from it copies the pages it touches (reference counts and the
garbage collector write to every object). Here a manifest is a handful of numpy arrays and one ``bytes``
blob: no per-row objects, nothing for the collector to walk, and forked workers share the pages
copy-on-write because nothing writes to them.

* :class:`PathTable`: paths, ``table[i] -> str``; relative entries resolve against a root on access.
* :class:`InfoColumns`: ``num_frames, fps, height, width`` columns and a ``known`` mask;
  ``columns[i] -> VideoInfo | None`` (None: not known or unreadable).
* :func:`read_csv_manifest`: a CSV read block by block into preallocated columns, with the rows to probe.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import itertools
import logging
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, TextIO, overload

import numpy as np

from opensora_ae.data.video_io import VideoInfo

logger = logging.getLogger(__name__)

META_COLUMNS = ("num_frames", "height", "width", "fps")
CSV_CHUNK_ROWS = 16384  # rows parsed at once: bounds the transient Python objects of the csv module
CSV_CHUNK_BYTES = 1 << 20  # text read at once by the unquoted fast path
MAX_COUNT = 2**31 - 1  # frame counts and sizes above this are not plausible metadata
BAD_ROW_EXAMPLES = 5  # rows quoted in the one warning about invalid metadata


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while building large arrays from short-lived objects.

    The csv module creates millions of small objects; each generation-2 collection in between would walk
    all live objects of the process (the measured 70% of the old epoch planning time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PathTable(Sequence):
    """Paths as one UTF-8 ``bytes`` blob and ``int64`` offsets; ``table[i]`` is the ``i``-th path (``str``).

    With ``root``, an entry is returned as ``normpath(join(root, entry))`` (absolute entries stay as they are),
    so a CSV's relative paths cost nothing until they are read.
    """

    def __init__(self, blob: bytes | bytearray, offsets: np.ndarray, root: str | None = None):
        self.blob, self.offsets, self.root = blob, offsets, root

    @classmethod
    def from_strings(cls, paths: Iterable[str], root: str | None = None) -> PathTable:
        """A table of ``paths`` (no entry may contain a NUL character)."""
        return cls(*_encode(list(paths)), root=root)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"path index {index} out of range for {len(self)} paths")
        entry = self.blob[self.offsets[index]:self.offsets[index + 1]].decode("utf-8")
        return os.path.normpath(os.path.join(self.root, entry)) if self.root else entry

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def subset(self, indices: Iterable[int]) -> list[str]:
        """The paths at ``indices``, as a list."""
        return [self[int(i)] for i in indices]

    def __repr__(self) -> str:
        return f"PathTable({len(self)} paths, {len(self.blob)} bytes)"


def _encode(paths: list[str]) -> tuple[bytes, np.ndarray]:
    """``(blob, offsets)`` of ``paths``; offsets has ``len(paths) + 1`` entries."""
    text = "".join(paths)
    if "\0" in text:
        raise ValueError("a path contains a NUL character")
    blob = text.encode("utf-8")
    lengths = np.fromiter(map(len, paths), np.int64, len(paths))
    if len(blob) != int(lengths.sum()):  # non-ASCII characters: byte lengths differ from str lengths
        lengths = np.fromiter((len(path.encode("utf-8")) for path in paths), np.int64, len(paths))
    offsets = np.zeros(len(paths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return blob, offsets


class InfoColumns(Sequence):
    """Per-file metadata as columns; ``columns[i]`` is a :class:`VideoInfo`, or None where ``known`` is False.

    ``columns[i] = None`` marks a file unreadable (a failed read), ``columns[i] = info`` sets its metadata.
    """

    def __init__(self, num_frames: np.ndarray, fps: np.ndarray, height: np.ndarray, width: np.ndarray,
                 known: np.ndarray):
        self.num_frames = num_frames.astype(np.int64, copy=False)
        self.fps = fps.astype(np.float64, copy=False)
        self.height = height.astype(np.int64, copy=False)
        self.width = width.astype(np.int64, copy=False)
        self.known = known.astype(bool, copy=False)

    def subset(self, indices: np.ndarray) -> InfoColumns:
        """The columns at ``indices`` (a copy)."""
        return InfoColumns(self.num_frames[indices], self.fps[indices], self.height[indices], self.width[indices],
                           self.known[indices])

    @classmethod
    def empty(cls, size: int) -> InfoColumns:
        zeros = np.zeros(size, np.int64)
        return cls(zeros, np.zeros(size), zeros.copy(), zeros.copy(), np.zeros(size, bool))

    def __len__(self) -> int:
        return len(self.known)

    def __getitem__(self, index: int) -> VideoInfo | None:
        if not self.known[index]:
            return None
        return VideoInfo(int(self.num_frames[index]), float(self.fps[index]), int(self.height[index]),
                         int(self.width[index]))

    def __setitem__(self, index: int, info: VideoInfo | None) -> None:
        if info is None:
            self.known[index] = False
            return
        self.num_frames[index], self.fps[index] = info.num_frames, info.fps
        self.height[index], self.width[index] = info.height, info.width
        self.known[index] = True

    def __iter__(self) -> Iterator[VideoInfo | None]:
        return (self[i] for i in range(len(self)))


class CsvManifest(NamedTuple):
    """A CSV read into columns: ``to_probe`` are the rows whose metadata is missing or invalid."""

    paths: PathTable
    infos: InfoColumns
    to_probe: np.ndarray  # int64 row indices (rows with an empty path are dropped before numbering)


def read_csv_manifest(csv_path: str) -> CsvManifest:
    """Read a dataset CSV (UTF-8, with or without a BOM) into columns; one-line errors for bad files.

    A row whose ``num_frames, height, width, fps`` are all present and valid (finite, frame count and sizes
    ``>= 1``, fps ``>= 0``) is trusted; other rows are probed. Rows with a value that is present but invalid
    (negative, zero, NaN, inf, not a number) are named in one warning.
    """
    try:
        with open(csv_path, encoding="utf-8-sig") as handle, gc_paused():
            columns = _header(next(csv.reader([handle.readline()]), []), csv_path)
            builder = _ManifestBuilder(csv_path)
            complete = builder.fill(_unquoted_chunks(handle, columns))
        if not complete:  # quoted fields: the csv module's parser
            with open(csv_path, newline="", encoding="utf-8-sig") as handle, gc_paused():
                reader = csv.reader(handle)
                next(reader)
                builder = _ManifestBuilder(csv_path)
                builder.fill(_read_chunk(rows, columns, first_row) for first_row, rows in _row_chunks(reader))
    except UnicodeDecodeError as err:
        raise ValueError(f"CSV {csv_path} is not UTF-8 text: {_undecodable_line(csv_path)} "
                         f"({err.reason}); save it as UTF-8 (e.g. Excel's 'CSV UTF-8')") from None
    except csv.Error as err:
        raise ValueError(f"CSV {csv_path} is not a valid CSV file: {err}") from None
    if not builder.rows:
        raise ValueError(f"CSV {csv_path} lists no files")
    _warn_invalid_rows(csv_path, builder.num_bad, builder.bad_rows)
    return builder.manifest(os.path.dirname(os.path.abspath(csv_path)))


class _ManifestBuilder:
    """Columns preallocated from the file's size and line count, filled block by block.

    Rows are at most the file's lines and path bytes at most its bytes, so nothing is concatenated at the
    end: the manifest exists once, plus one block in flight.
    """

    def __init__(self, csv_path: str):
        lines, size = _count_lines(csv_path), os.path.getsize(csv_path)
        self.blob, self.offsets = bytearray(size), np.zeros(lines + 1, np.int64)
        self.columns = {name: np.zeros(lines, dtype) for name, dtype in
                        (("num_frames", np.int64), ("fps", np.float64), ("height", np.int64), ("width", np.int64),
                         ("known", bool))}
        self.rows = self.bytes = self.num_bad = 0
        self.bad_rows: list[tuple[int, str, str]] = []

    def fill(self, chunks: Iterable[_Chunk | None]) -> bool:
        """Add every chunk; False when the source stopped with None (the file needs another parser)."""
        for chunk in chunks:
            if chunk is None:
                return False
            rows, used = len(chunk.infos), len(chunk.blob)
            self.blob[self.bytes:self.bytes + used] = chunk.blob
            self.offsets[self.rows + 1:self.rows + rows + 1] = chunk.offsets[1:] + self.bytes
            for name, column in self.columns.items():
                column[self.rows:self.rows + rows] = getattr(chunk.infos, name)
            self.rows, self.bytes = self.rows + rows, self.bytes + used
            self.num_bad += chunk.num_bad
            self.bad_rows.extend(chunk.bad_rows[:BAD_ROW_EXAMPLES - len(self.bad_rows)])
        return True

    def manifest(self, root: str) -> CsvManifest:
        del self.blob[self.bytes:]
        infos = InfoColumns(*(self.columns[name][:self.rows] for name in self.columns))
        return CsvManifest(PathTable(self.blob, self.offsets[:self.rows + 1], root), infos,
                           np.flatnonzero(~infos.known))


def _count_lines(csv_path: str) -> int:
    lines = 1
    with open(csv_path, "rb") as handle:
        while block := handle.read(1 << 22):
            lines += block.count(b"\n")
    return lines


def _header(header: list[str], csv_path: str) -> dict[str, int]:
    columns = {name.strip(): position for position, name in reversed(list(enumerate(header)))}
    if "path" not in columns:
        raise ValueError(f"CSV {csv_path} has no 'path' column (columns: {', '.join(header) or 'none'}); "
                         f"add a header row with 'path' naming the video files")
    return columns


def _row_chunks(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[list[str]]]]:
    first_row = 0
    while rows := list(itertools.islice(reader, CSV_CHUNK_ROWS)):
        yield first_row, rows
        first_row += len(rows)


class _Chunk(NamedTuple):
    blob: bytes
    offsets: np.ndarray
    infos: InfoColumns  # known: the row's four values are all present and valid (zeros elsewhere)
    bad_rows: list[tuple[int, str, str]]  # (data row number from 1, column, text) of invalid values, a few
    num_bad: int


def _unquoted_chunks(handle: TextIO, columns: dict[str, int]) -> Iterator[_Chunk | None]:
    """Chunks of a CSV without quote characters; None, and the end, as soon as one appears.

    Without quotes a row is its line split at commas, so numpy's C parser (``np.loadtxt``) reads the metadata
    columns and one regular expression the paths; a block it cannot take (empty cells, short rows, blank
    lines, text in a number column) goes through :func:`_read_chunk` instead.
    """
    path_pattern = re.compile(r"^(?:[^,\n]*,){%d}([^,\n]*)[^\n]*\n" % columns["path"], re.MULTILINE)
    first_row = 0
    while lines := handle.readlines(CSV_CHUNK_BYTES):
        text = "".join(lines)
        if '"' in text:
            yield None
            return
        chunk = _loadtxt_chunk(lines, text, path_pattern, columns, first_row)
        yield chunk or _read_chunk([line.rstrip("\n").split(",") for line in lines], columns, first_row)
        first_row += len(lines)


def _loadtxt_chunk(lines: list[str], text: str, path_pattern: re.Pattern, columns: dict[str, int],
                   first_row: int) -> _Chunk | None:
    """One block of complete, unquoted rows parsed in C; None when the block is not that simple."""
    positions = [columns.get(name) for name in META_COLUMNS]
    if None in positions:
        return None
    paths = path_pattern.findall(text)
    if len(paths) != len(lines) or not min(map(len, paths)):
        return None
    try:
        numbers = np.loadtxt(lines, delimiter=",", usecols=positions, comments=None, dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    if len(numbers) != len(lines):
        return None
    values = {name: np.ascontiguousarray(numbers[:, position]) for position, name in enumerate(META_COLUMNS)}
    present = np.ones(len(lines), bool)
    row_numbers = np.arange(len(lines)) + first_row + 1
    return _finish_chunk(paths, values, dict.fromkeys(META_COLUMNS, present), row_numbers,
                         lambda row, name: lines[row].rstrip("\n").split(",")[columns[name]])


def _read_chunk(rows: list[list[str]], columns: dict[str, int], first_row: int) -> _Chunk:
    """Columns of one block of CSV rows; rows with an empty path are dropped."""
    column = _column_reader(rows, columns)
    path_column = column("path")
    keep = np.fromiter(map(len, path_column), np.int64, len(rows)) > 0
    every_row = bool(keep.all())
    paths = path_column if every_row else list(itertools.compress(path_column, keep))
    values, present, texts = {}, {}, {}
    for name in META_COLUMNS:
        texts[name] = column(name) if every_row else list(itertools.compress(column(name), keep))
        values[name], present[name] = _parse_numbers(texts[name])
    row_numbers = np.flatnonzero(keep) + first_row + 1
    return _finish_chunk(paths, values, present, row_numbers, lambda row, name: texts[name][row])


def _finish_chunk(paths: list[str], values: dict[str, np.ndarray], present: dict[str, np.ndarray],
                  row_numbers: np.ndarray, cell: Callable[[int, str], str]) -> _Chunk:
    """Validate a block's metadata (rows with all four valid values are known) and encode its paths."""
    bad_cells, ok = [], []
    for name in META_COLUMNS:
        with np.errstate(invalid="ignore"):
            lowest = 0.0 if name == "fps" else 1.0
            column_ok = np.isfinite(values[name]) & (np.trunc(values[name]) >= lowest) & (values[name] <= MAX_COUNT)
        bad_cells.append(present[name] & ~column_ok)
        ok.append(column_ok)
    valid = np.logical_and.reduce(ok)
    bad = np.logical_or.reduce(bad_cells)
    bad_rows = []
    for row in np.flatnonzero(bad)[:BAD_ROW_EXAMPLES]:
        name = next(name for name, cells in zip(META_COLUMNS, bad_cells) if cells[row])
        bad_rows.append((int(row_numbers[row]), name, cell(int(row), name)))
    try:
        blob, offsets = _encode(paths)
    except ValueError as err:
        raise csv.Error(err) from None  # named with the CSV by the caller
    infos = InfoColumns(*(np.where(valid, values[name], 0) for name in ("num_frames", "fps", "height", "width")),
                        valid)
    return _Chunk(blob, offsets, infos, bad_rows, int(bad.sum()))


def _column_reader(rows: list[list[str]], columns: dict[str, int]) -> Callable[[str], list[str]]:
    """``column(name) -> list[str]`` of the rows' cells ("" where a row is too short or the column absent)."""
    complete = bool(rows) and min(map(len, rows)) > max(columns.values())  # the usual case
    fields = None if complete else list(itertools.zip_longest(*rows, fillvalue=""))  # transposed, padded

    def column(name: str) -> list[str]:
        position = columns.get(name)
        if position is None:
            return [""] * len(rows)
        if complete:
            return list(map(operator.itemgetter(position), rows))
        return list(fields[position]) if position < len(fields) else [""] * len(rows)

    return column


def _parse_numbers(text: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, present)`` of one metadata column: values NaN where absent or not a number."""
    try:
        return np.array(text, dtype=np.float64), np.ones(len(text), bool)
    except ValueError:  # empty cells or text that is not a number
        values = np.array([_to_float(value) for value in text], dtype=np.float64)
        return values, np.fromiter(map(len, text), np.int64, len(text)) > 0


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _warn_invalid_rows(csv_path: str, total: int, examples: list[tuple[int, str, str]]) -> None:
    if not total:
        return
    listed = "; ".join(f"row {row} {name}={text!r}" for row, name, text in examples)
    more = f" and {total - len(examples)} more" if total > len(examples) else ""
    logger.warning("CSV %s: %d row(s) with a num_frames/height/width/fps that is not a positive finite number "
                   "(%s%s; rows count from 1 after the header); those files are probed instead",
                   csv_path, total, listed, more)


def _undecodable_line(csv_path: str) -> str:
    """``"line N has byte 0x.."`` for the first line of ``csv_path`` that is not valid UTF-8."""
    with open(csv_path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number} has byte 0x{line[err.start]:02x} at column {err.start + 1}"
    return "a byte sequence is not valid UTF-8"
