"""The memoizing HPACK coder must be byte-for-byte the plain one, in lockstep, whatever the
sequence of header lists (repeats, new fields, never-indexed fields, table resizes)."""

from __future__ import annotations

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.proxy.protocols._h2hpack import MemoDecoder, MemoEncoder

_FIELDS = [
    (b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"0"),
    (b"x-id", b"1"), (b"x-id", b"2"), (b"x-long", b"v" * 300), (b"authorization", b"secret"),
]
_field = st.tuples(st.sampled_from(_FIELDS), st.booleans()).map(
    lambda fn: NeverIndexedHeaderTuple(*fn[0]) if fn[1] else HeaderTuple(*fn[0]))
_step = st.one_of(st.lists(_field, min_size=1, max_size=5),
                  st.sampled_from([0, 64, 512, 4096]))  # an int: a table resize


def _decoded(dec: Decoder, block: bytes) -> object:
    try:
        return dec.decode(block, raw=True)
    except Exception as exc:  # hpack's own quirks must be reproduced too
        return type(exc)


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, max_size=30))
def test_memo_coders_match_plain_hpack_in_lockstep(steps: list[list[HeaderTuple] | int]) -> None:
    plain_enc, memo_enc = Encoder(), MemoEncoder()
    plain_dec, memo_dec = Decoder(), MemoDecoder()
    for step in steps:
        if isinstance(step, int):
            plain_enc.header_table_size = memo_enc.header_table_size = step
            continue
        block = plain_enc.encode(step)
        assert memo_enc.encode(step) == block
        assert _decoded(memo_dec, block) == _decoded(plain_dec, block)


def test_a_repeated_list_is_served_from_the_memo() -> None:
    enc, dec = MemoEncoder(), MemoDecoder()
    fields = [HeaderTuple(b":status", b"200"), HeaderTuple(b"content-type", b"application/grpc")]
    first = enc.encode(fields)  # inserts content-type: not memoized
    second = enc.encode(fields)  # all indexed now: memoized
    assert first != second and enc.encode(fields) == second
    assert len(enc._memo) == 1
    dec.decode(first, raw=True)
    assert dec.decode(second, raw=True) == dec.decode(second, raw=True) == [
        (b":status", b"200"), (b"content-type", b"application/grpc")]
    assert len(dec._memo) == 1


def test_a_table_size_update_is_sent_once_not_memoized() -> None:
    enc = MemoEncoder()
    fields = [HeaderTuple(b":status", b"200")]
    enc.encode(fields)
    enc.header_table_size = 1024
    first = enc.encode(fields)
    assert first[0] & 0xE0 == 0x20  # a dynamic table size update leads the block
    assert enc.encode(fields) == b"\x88"  # indexed :status 200 alone


def test_a_memo_is_dropped_when_the_table_changes() -> None:
    enc = MemoEncoder()
    fields = [HeaderTuple(b"x-a", b"1")]
    enc.encode(fields)
    assert enc.encode(fields) == enc.encode(fields)
    enc.encode([HeaderTuple(b"x-b", b"2")])  # inserts: x-a moves to index 63
    assert enc.encode(fields) == bytes([0x80 | 63]) and len(enc._memo) == 1
