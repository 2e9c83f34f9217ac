"""HPACK with memoized header blocks: the same fields on the same table encode (and decode)
the same way, so a proxy relaying one gRPC method over and over need not redo it.

HPACK is deterministic given the dynamic table: a header list whose every field is found in
the table (or is sent as a literal *without* indexing) encodes to the same bytes and leaves
the table untouched; a header block made only of such references decodes to the same list.
So each direction keeps ``{input: output}`` for the current table *generation* — a counter
bumped by every insertion, eviction or resize — and drops the memo when it moves. An
encoding or decoding that changed the table is never memoized (the next one would differ).
Per-request fields (unique paths, request ids) insert into the table, so they simply miss:
the memo costs one dict lookup then and never grows past :data:`MEMO_ENTRIES`.

Profiles of the proxy relaying gRPC put hpack's pure-Python encode and decode at roughly a
third of h2's per-request cost; the memo takes that to a lookup once a connection is warm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable

__all__ = ["MEMO_ENTRIES", "MemoDecoder", "MemoEncoder", "VersionedTable"]

MEMO_ENTRIES = 64
"""Header lists remembered per direction and table generation (a connection sees few)."""


class VersionedTable(HeaderTable):
    """hpack's dynamic table with a generation counter: any change bumps it."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @HeaderTable.maxsize.setter  # type: ignore[attr-defined,untyped-decorator]
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class MemoEncoder(Encoder):
    """An :class:`hpack.Encoder` that returns the remembered block for a header list it
    encoded on the same table generation (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table: VersionedTable = VersionedTable()
        self._memo: dict[tuple[Any, ...], bytes] = {}
        self._generation = 0

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        if table.resized or not huffman or type(headers) is dict:  # a size update leads
            return super().encode(headers, huffman)
        fields = tuple(headers)
        # HeaderTuple and NeverIndexedHeaderTuple compare equal: key on indexability too
        key = (fields, tuple([type(f) is not HeaderTuple and type(f) is not tuple
                              for f in fields]))
        if table.generation != self._generation:
            self._memo.clear()
            self._generation = table.generation
        else:
            hit = self._memo.get(key)
            if hit is not None:
                return hit
        out = super().encode(fields, huffman)
        if table.generation == self._generation and len(self._memo) < MEMO_ENTRIES:
            self._memo[key] = out
        return out


class MemoDecoder(Decoder):
    """An :class:`hpack.Decoder` that returns (a copy of) the remembered list for a header
    block it decoded on the same table generation (see the module docstring)."""

    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self.header_table: VersionedTable = VersionedTable()
        self._memo: dict[tuple[bytes, bool], list[Any]] = {}
        self._generation = 0
        self._limit = max_header_list_size

    def decode(self, data: bytes, raw: bool = False) -> Iterable[Any]:
        table = self.header_table
        key = (bytes(data), raw)
        if table.generation != self._generation or self._limit != self.max_header_list_size:
            self._memo.clear()
            self._generation = table.generation
            self._limit = self.max_header_list_size
        else:
            hit = self._memo.get(key)
            if hit is not None:
                return list(hit)
        out = super().decode(data, raw)
        if table.generation == self._generation and len(self._memo) < MEMO_ENTRIES:
            self._memo[key] = list(out)
        return out
