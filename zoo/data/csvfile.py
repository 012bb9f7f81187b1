"""CSV tables streamed into typed arrays.

The table is read in blocks of about ``BLOCK_CHARS`` characters, each ending at a record
boundary, and every block goes straight into preallocated ``float32`` features and typed
labels, so memory stays near the size of the final arrays (no list of rows, no strings kept).
A block is parsed by numpy's C reader when that is unambiguous (no quotes, one value per
header column, nothing numpy and Python would read differently); any other block, and any
block with a problem, is parsed row by row with Python's ``csv`` module, which gives the
exact result and the error with its line number. Both give the same arrays (the tests check
this on random tables).

Rules (documented in docs/data-files.md): the first non-blank row is the header; blank rows
are skipped; the label column is the last one unless named. Labels that are all integers
classify, all numbers regress, otherwise they are class names (sorted, at most
``MAX_CLASSES``). Feature values must fit ``float32``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import warnings

import numpy as np

from zoo.data.dataset import FLOAT32_OVERFLOW, MAX_CLASSES
from zoo.errors import DataError
from zoo.userfile import file_size, open_regular, shown

BLOCK_CHARS = 1 << 18
ROWS_PER_CHUNK = 1 << 16  # rows the exact reader converts at a time
_INT64 = np.iinfo(np.int64)


def read_csv(path, label_column: str | int | None = None, task: str | None = None) -> dict:
    """Features ``x`` (float32), labels ``y`` and ``classes`` for text labels, from a CSV.

    Returns the parts dict of ``zoo.data.files``: ``x``, ``info`` (columns, label column),
    and unless unlabelled ``y`` (int64 classes or float64 targets) and maybe ``classes``.
    """
    where = shown(path)
    with open_regular(path, where) as raw:
        bound = _record_bound(raw, where)
        for text_labels in (False, True):
            raw.seek(0)
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            try:
                return _Table(where, text, bound, label_column, task, text_labels).read()
            except _TextLabels:
                continue  # a text label after numeric ones: read once more, labels as text
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not a UTF-8 text file ({exc}); expected a CSV "
                                f"table") from None
            except csv.Error as exc:
                raise DataError(f"{where}: malformed CSV ({exc})") from None
            except OSError as exc:
                raise DataError(f"{where}: cannot read it ({exc.strerror or exc})") from None
            finally:
                text.detach()
    raise AssertionError("unreachable: the second pass reads labels as text")


class _TextLabels(Exception):
    """A text label turned up after blocks of numeric ones."""


def _record_bound(raw, where) -> int:
    """An upper bound on the records in the file: its line breaks plus one."""
    count = 1
    try:
        while chunk := raw.read(1 << 20):
            count += chunk.count(b"\n") + chunk.count(b"\r")
    except OSError as exc:
        raise DataError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    return count


class _Table:
    def __init__(self, where, text, bound, label_column, task, text_labels):
        self.where, self.text, self.bound = where, text, bound
        self.label_column, self.task, self.text_labels = label_column, task, text_labels
        self.rows = 0
        self.label_kind = "int"  # how labels are stored so far: int64, or float64 in place
        self.decimals = False  # a label that is a number but not an integer was seen
        self.first_big = None  # (line, text) of the first integer label beyond int64
        self.names: dict[str, int] = {}  # text labels: name -> order of first appearance

    # -- the table, block by block ------------------------------------------------------------

    def read(self) -> dict:
        blocks = self._blocks()
        body_line, body = self._header(blocks)
        self._allocate()
        for line, block in itertools.chain([(body_line, body)], blocks):
            if '"' in block:
                # Quoted fields may hold line breaks and commas: from here on, the csv module
                # reads the records, whole, in chunks of rows.
                rest = itertools.chain([block], (later for _, later in blocks))
                lines = itertools.chain.from_iterable(io.StringIO(b, newline="") for b in rest)
                for parsed in _exact_rows(self, line, lines):
                    self._store(parsed)
                break
            parsed = _fast_block(self, block)
            if parsed is not None:
                self._store(parsed)
            else:
                for parsed in _exact_rows(self, line, io.StringIO(block, newline="")):
                    self._store(parsed)
        if self.rows == 0:
            raise DataError(f"{self.where}: has a header but no data rows; expected at least "
                            f"one row")
        return self._parts()

    def _blocks(self):
        """(first line number, text) of blocks that end at a line break (or the file's end)."""
        line, carry = 1, []
        while chunk := self.text.read(BLOCK_CHARS):
            # never cut in "\r\n": a "\r" ending the chunk may have its "\n" in the next one
            cut = max(chunk.rfind("\n"), chunk.rfind("\r", 0, len(chunk) - 1)) + 1
            if cut == 0:
                carry.append(chunk)  # no line break yet: one long record
                continue
            block = "".join(carry) + chunk[:cut]
            carry = [chunk[cut:]]
            yield line, block
            line += _line_breaks(block)
        if rest := "".join(carry):
            yield line, rest

    def _header(self, blocks):
        for line, block in blocks:
            source = io.StringIO(block, newline="")
            reader = csv.reader(source)
            for row in reader:
                if any(cell.strip() for cell in row):
                    self._columns(row)
                    return line + reader.line_num, source.read()
        raise DataError(f"{self.where}: the file is empty; expected a header row and data rows")

    def _columns(self, row):
        header = [h.strip() for h in row]
        if all(_is_number(h) for h in header):
            raise DataError(f"{self.where}: the first row {row[:4]}... looks like data; "
                            f"expected a header row naming the columns")
        if self.task == "reconstruct" and self.label_column is None:
            label_at = None
        elif self.label_column is None:
            label_at = len(header) - 1
        elif str(self.label_column) in header:  # a name wins over an index that looks the same
            label_at = header.index(str(self.label_column))
        elif _is_int(str(self.label_column)) \
                and -len(header) <= int(self.label_column) < len(header):
            label_at = int(self.label_column) % len(header)  # 0-based; -1 is the last
        else:
            raise DataError(f"{self.where}: no column named {self.label_column!r} and no such "
                            f"index; the header has {', '.join(header)} (indexes 0 to "
                            f"{len(header) - 1})")
        self.features = [j for j in range(len(header)) if j != label_at]
        if not self.features:
            raise DataError(f"{self.where}: only the label column {header[label_at]!r}; "
                            f"expected at least one feature column")
        self.header, self.label_at = header, label_at

    def _allocate(self):
        # Each data row holds a value per column, commas between them and a line break, so
        # the file's size bounds the rows as well as its line breaks do.
        width = len(self.header)
        rows = min(self.bound, file_size(self.text.buffer) // (2 * width) + 1)
        self.x = np.empty((rows, len(self.features)), dtype=np.float32)
        self.y = None if self.label_at is None else np.empty(rows, dtype=np.int64)

    def _store(self, parsed):
        x, labels = parsed
        n = len(x)
        if self.rows + n > len(self.x):
            raise DataError(f"{self.where}: changed while being read; expected a file that "
                            f"stays the same")
        self.x[self.rows:self.rows + n] = x
        if labels is not None:
            self._store_labels(labels)
        self.rows += n

    # -- labels -------------------------------------------------------------------------------

    def _store_labels(self, labels):
        kind, values = labels
        at = slice(self.rows, self.rows + len(values))
        if kind == "text" and not self.text_labels:
            if self.rows:
                raise _TextLabels
            self.text_labels = True
        if self.text_labels:
            self.y[at] = self._codes(values)
            return
        if kind == "float":
            self.decimals = True  # a label that is not an integer: the labels are targets
        if kind != "int" and self.label_kind == "int":
            self._labels_to_float()
        if self.label_kind == "float":
            self.y.view(np.float64)[at] = values
        else:
            self.y[at] = values

    def _labels_to_float(self):
        """Turn the integer labels stored so far into floats, in place (same item size)."""
        as_float = self.y.view(np.float64)
        for start in range(0, self.rows, 1 << 20):
            part = slice(start, min(start + (1 << 20), self.rows))
            as_float[part] = self.y[part].astype(np.float64)
        self.label_kind = "float"

    def _codes(self, cells) -> np.ndarray:
        names = self.names
        codes = np.empty(len(cells), dtype=np.int64)
        for i, cell in enumerate(cells):
            code = names.get(cell)
            if code is None:
                if len(names) >= MAX_CLASSES:
                    raise DataError(f"{self.where}: column {self.header[self.label_at]!r} has "
                                    f"more than {MAX_CLASSES} different labels; expected at "
                                    f"most {MAX_CLASSES} classes")
                code = names[cell] = len(names)
            codes[i] = code
        return codes

    def _parts(self) -> dict:
        n, header = self.rows, self.header
        x = self.x[:n] if n > len(self.x) // 2 else self.x[:n].copy()
        parts: dict = {"x": x, "info": {"columns": [header[j] for j in self.features]}}
        if self.label_at is None:
            return parts
        parts["info"]["label_column"] = header[self.label_at]
        y = self.y[:n] if n > len(self.y) // 2 else self.y[:n].copy()
        if self.text_labels:
            names = sorted(self.names)
            rank = np.empty(len(names), dtype=np.int64)
            rank[[self.names[name] for name in names]] = np.arange(len(names))
            parts["y"], parts["classes"] = rank[y], names
        elif self.label_kind == "int":
            parts["y"] = y
        elif self.decimals or self.task == "regress":
            parts["y"] = y.view(np.float64)
        else:  # integers only, but some beyond int64: no class index can be that large
            line, cell = self.first_big
            raise DataError(f"{self.where}: line {line}, column {header[self.label_at]!r}: "
                            f"class label {cell} is too large; expected class indices below "
                            f"{MAX_CLASSES} (or task regress for numeric targets)")
        return parts


# -- one block: fast (numpy's reader) or exact (csv, row by row) --------------------------------

def _fast_block(table, block):
    """``(x, labels)`` of a block by numpy's C reader, or None when only the exact reader
    can tell (anything unusual: it then also finds the line of any problem)."""
    width = len(table.header)
    options = dict(delimiter=",", comments=None, quotechar=None, ndmin=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. numpy's note on blank lines: read exactly
            x = np.loadtxt(io.StringIO(block), dtype=np.float64, usecols=table.features,
                           **options)
            cells = None
            if table.label_at is not None:
                cells = np.loadtxt(io.StringIO(block), dtype=object, usecols=[table.label_at],
                                   **options)[:, 0]
    except (ValueError, Warning, IndexError, TypeError):
        return None
    n = len(x)
    if n == 0 or block.count(",") != n * (width - 1) or (cells is not None and len(cells) != n):
        return None
    if not _fits_float32(x):
        return None
    if cells is None:
        return x, None
    labels = _typed_labels(table, cells)
    return (x, labels) if labels is not None else None


def _typed_labels(table, cells):
    """('int', int64) / ('float', float64) / ('text', stripped names) from an object array of
    label cells, or None when the exact reader must look (a blank label, or an integer
    beyond int64: only it knows their lines). ``int()`` and ``float()`` ignore surrounding
    whitespace as the exact reader's stripping does."""
    if not table.text_labels:
        try:
            return "int", cells.astype(np.int64)
        except OverflowError:
            return None
        except ValueError:
            pass
        try:
            return "float", cells.astype(np.float64)
        except ValueError:
            if table.task == "regress":
                return None  # the exact reader names the line of the first non-number
    names = [c.strip() for c in cells]
    return ("text", names) if all(names) else None


def _exact_rows(table, first_line, lines):
    """``(x, labels)`` chunks of the records in ``lines`` (an iterable of text lines starting
    at line ``first_line``), read by the csv module: exact, and every problem names its line."""
    reader = csv.reader(lines)
    rows, cells, numbers = [], [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = first_line - 1 + reader.line_num
        rows.append(_exact_features(table, line, row))
        if table.label_at is not None:
            cell = row[table.label_at].strip()
            if not cell:
                raise DataError(f"{table.where}: line {line} has no value in the label column "
                                f"{table.header[table.label_at]!r}; expected a label on every "
                                f"row")
            if table.task == "regress" and not _is_number(cell):
                raise DataError(f"{table.where}: line {line}, column "
                                f"{table.header[table.label_at]!r}: expected a number to "
                                f"regress; received {cell!r}")
            cells.append(cell)
            numbers.append(line)
        if len(rows) == ROWS_PER_CHUNK:
            yield _exact_chunk(table, rows, cells, numbers)
            rows, cells, numbers = [], [], []
    if rows:
        yield _exact_chunk(table, rows, cells, numbers)


def _exact_features(table, line, row) -> list[float]:
    where, header = table.where, table.header
    if len(row) != len(header):
        raise DataError(f"{where}: line {line} has {len(row)} values; expected {len(header)}, "
                        f"one per header column")
    values = []
    for j in table.features:
        try:
            value = float(row[j])
        except ValueError:
            raise DataError(f"{where}: line {line}, column {header[j]!r}: expected a number; "
                            f"received {row[j]!r}") from None
        if math.isfinite(value) and abs(value) >= FLOAT32_OVERFLOW:
            raise DataError(f"{where}: line {line}, column {header[j]!r}: {row[j].strip()} is "
                            f"beyond the float32 range (largest 3.4e38); expected smaller "
                            f"numbers")
        values.append(value)
    return values


def _exact_chunk(table, rows, cells, lines):
    x = np.array(rows, dtype=np.float64).reshape(len(rows), len(table.features))
    if table.label_at is None:
        return x, None
    if table.text_labels or not all(_is_int(c) for c in cells):
        if not table.text_labels and all(_is_number(c) for c in cells):
            return x, ("float", np.array([float(c) for c in cells], dtype=np.float64))
        return x, ("text", cells)
    values = [int(c) for c in cells]
    big = next((i for i, v in enumerate(values) if not _INT64.min <= v <= _INT64.max), None)
    if big is None:
        return x, ("int", np.array(values, dtype=np.int64))
    if table.first_big is None:
        table.first_big = (lines[big], cells[big])
    return x, ("bigint", np.array([float(v) for v in values], dtype=np.float64))


# -- helpers ------------------------------------------------------------------------------------

def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _fits_float32(x: np.ndarray) -> bool:
    """No finite value of ``x`` becomes infinite as float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = np.isinf(x.astype(np.float32)) & np.isfinite(x)
    return not overflow.any()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
