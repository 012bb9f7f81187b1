"""Parse and validate the JSON header of a file in the safetensors layout.

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` and may
hold a ``"__metadata__"`` map of string to string (https://github.com/huggingface/safetensors).
It is parsed by a small recursive-descent parser for exactly that grammar rather than by
``json.loads``: a hostile header cannot make it build nested structures or large lists, only a
few objects per tensor it declares, and every error names what is wrong and where.
"""

from __future__ import annotations

import re
from json.decoder import scanstring

import numpy as np

from zoo.errors import CheckpointError

# safetensors dtype code -> little-endian numpy dtype. bfloat16 and float8 have no numpy dtype.
DTYPES: dict[str, np.dtype] = {
    code: np.dtype(spec)
    for code, spec in [
        ("BOOL", "|b1"), ("U8", "|u1"), ("I8", "|i1"), ("U16", "<u2"), ("I16", "<i2"),
        ("F16", "<f2"), ("U32", "<u4"), ("I32", "<i4"), ("F32", "<f4"), ("U64", "<u8"),
        ("I64", "<i8"), ("F64", "<f8"),
    ]
}
_ALLOWED = ", ".join(sorted(DTYPES))
MAX_NDIM = 32  # numpy 1.x's limit
_MAX_DIM_PRODUCT = np.iinfo(np.intp).max  # numpy refuses a shape whose byte count exceeds it
METADATA_KEY = "__metadata__"
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")

_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = (" ", "\t", "\n", "\r")
_UINT = r"(?:0|[1-9][0-9]{0,19})"
_COMPACT_ENTRY = re.compile(
    rf'\{{"dtype":"([A-Z0-9_]{{1,16}})","shape":\[({_UINT}(?:,{_UINT}){{0,{MAX_NDIM - 1}}})?\],'
    rf'"data_offsets":\[({_UINT}),({_UINT})\]\}}')
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,19})(?![0-9.eE])")


def parse_header(raw, data_len: int, where) -> tuple[list, dict[str, str]]:
    """Parse and validate a header against a data area of ``data_len`` bytes.

    Args:
        raw: the header bytes (any bytes-like object).
        data_len: the size of the data area that follows the header.
        where: how errors name the file, e.g. ``"checkpoint model.ckpt"``.

    Returns:
        ``(entries, metadata)``: entries ``(name, dtype code, shape, begin, end)`` sorted by
        offset, tiling ``[0, data_len)`` exactly, and the string-to-string metadata.

    Raises:
        CheckpointError: anything malformed, in one line that starts with ``where``.
    """
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{where}: the header is not UTF-8 (byte {exc.start})") from None
    parser = _HeaderParser(text, where)
    entries, metadata = parser.parse()
    _check_layout(entries, data_len, where)
    return entries, metadata


class _HeaderParser:
    def __init__(self, text: str, where: str):
        self.text = text
        self.pos = 0
        self.where = where

    def fail(self, problem: str):
        raise CheckpointError(f"{self.where}: the header is not a valid safetensors header: "
                              f"{problem} (at character {self.pos})")

    def parse(self):
        entries, metadata = [], {}
        seen = set()
        self.ws()
        for key in self.members("the header"):
            if key in seen:
                self.fail(f"the key {key!r} appears twice")
            seen.add(key)
            if key == METADATA_KEY:
                metadata = self.metadata()
            else:
                entries.append(self.entry(key))
        self.ws()
        if self.pos != len(self.text):
            self.fail("unexpected text after the header object")
        return entries, metadata

    def members(self, what: str):
        """Yield each key of a JSON object, leaving the position at its value."""
        self.expect("{", f"{what} must be a JSON object")
        self.ws()
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.string(f"expected a string key in {what}")
            self.ws()
            self.expect(":", "expected ':'")
            self.ws()
            yield key
            self.ws()
            if self.peek() == ",":
                self.pos += 1
                self.ws()
                continue
            self.expect("}", f"expected ',' or '}}' in {what}")
            return

    def metadata(self) -> dict[str, str]:
        out = {}
        for key in self.members("__metadata__"):
            if key in out:
                self.fail(f"the metadata key {key!r} appears twice")
            out[key] = self.string(f"metadata value {key!r} must be a string")
        return out

    def entry(self, name: str):
        if name == "":
            self.fail("a tensor name is empty")
        fast = _COMPACT_ENTRY.match(self.text, self.pos)
        if fast is not None:  # how safetensors writers spell an entry; anything else is parsed
            code, dims, begin, end = fast.groups()
            if code not in DTYPES:
                self.fail(f"tensor {name!r} has dtype {code!r}; expected one of {_ALLOWED}")
            self.pos = fast.end()
            shape = tuple(map(int, dims.split(","))) if dims else ()
            return name, code, shape, int(begin), int(end)
        fields: dict = {}
        for key in self.members(f"tensor {name!r}"):
            if key not in _ENTRY_KEYS:
                self.fail(f"tensor {name!r} has an unknown field {key!r}; expected "
                          f"dtype, shape and data_offsets")
            if key in fields:
                self.fail(f"tensor {name!r} has {key!r} twice")
            if key == "dtype":
                fields[key] = self.string(f"tensor {name!r}: dtype must be a string")
            elif key == "shape":
                fields[key] = self.ints(f"tensor {name!r}: shape", MAX_NDIM)
            else:
                fields[key] = self.ints(f"tensor {name!r}: data_offsets", 2)
        for key in _ENTRY_KEYS:
            if key not in fields:
                self.fail(f"tensor {name!r} has no {key!r}")
        code, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
        if code not in DTYPES:
            self.fail(f"tensor {name!r} has dtype {code!r}; expected one of {_ALLOWED}")
        if len(offsets) != 2:
            self.fail(f"tensor {name!r}: data_offsets must be [begin, end]; received "
                      f"{list(offsets)}")
        return name, code, shape, offsets[0], offsets[1]

    def ints(self, what: str, max_len: int) -> tuple[int, ...]:
        self.expect("[", f"{what} must be a list of integers")
        out = []
        self.ws()
        if self.peek() == "]":
            self.pos += 1
            return ()
        while True:
            match = _INT.match(self.text, self.pos)
            if match is None:
                self.fail(f"{what} must be a list of integers of at most 20 digits")
            if len(out) == max_len:
                self.fail(f"{what} has more than {max_len} entries")
            out.append(int(match.group()))
            self.pos = match.end()
            self.ws()
            if self.peek() == ",":
                self.pos += 1
                self.ws()
                continue
            self.expect("]", f"{what}: expected ',' or ']'")
            return tuple(out)

    def string(self, problem: str) -> str:
        if self.peek() != '"':
            self.fail(problem)
        try:
            # json's own string scanner (in C): linear, strict about control characters and
            # escapes, and it allocates only the result (a regex would stack every escape).
            value, self.pos = scanstring(self.text, self.pos + 1, True)
        except ValueError as exc:
            self.fail(f"{problem}: {getattr(exc, 'msg', exc)}")
        return value

    def expect(self, char: str, problem: str) -> None:
        if self.peek() != char:
            self.fail(problem)
        self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def ws(self) -> None:
        if self.text[self.pos:self.pos + 1] in _WS_CHARS:  # most headers are compact
            self.pos = _WS.match(self.text, self.pos).end()


def _check_layout(entries: list, data_len: int, where) -> None:
    """Shapes against byte counts; offsets inside the data area, tiling it without gaps."""
    for name, code, shape, begin, end in entries:
        itemsize = DTYPES[code].itemsize
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{where}: tensor {name!r} has a negative dimension in shape "
                                  f"{list(shape)}")
        if not 0 <= begin <= end:
            raise CheckpointError(f"{where}: tensor {name!r} has data_offsets [{begin}, {end}]; "
                                  f"expected 0 <= begin <= end")
        if end > data_len:
            raise CheckpointError(f"{where}: tensor {name!r} has data_offsets [{begin}, {end}] "
                                  f"beyond the data area ({data_len} bytes; is the file "
                                  f"truncated?)")
        count = 1
        nonzero = itemsize
        for d in shape:
            count *= d
            nonzero *= max(d, 1)
        if count * itemsize != end - begin:
            raise CheckpointError(f"{where}: tensor {name!r} of dtype {code} and shape "
                                  f"{list(shape)} needs {count * itemsize} bytes; its "
                                  f"data_offsets [{begin}, {end}] hold {end - begin}")
        if nonzero > _MAX_DIM_PRODUCT:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {list(shape)}, too large "
                                  f"for numpy")
    entries.sort(key=lambda e: (e[3], e[4]))
    cursor, previous = 0, None
    for name, _, _, begin, end in entries:
        if begin < cursor:
            raise CheckpointError(f"{where}: tensors {previous!r} and {name!r} overlap (bytes "
                                  f"{begin} to {cursor})")
        if begin > cursor:
            raise CheckpointError(f"{where}: bytes {cursor} to {begin} of the data area belong to "
                                  f"no tensor (the layout forbids gaps)")
        cursor, previous = end, name
    if cursor != data_len:
        raise CheckpointError(f"{where}: bytes {cursor} to {data_len} of the data area belong to "
                              f"no tensor (the layout forbids gaps)")
