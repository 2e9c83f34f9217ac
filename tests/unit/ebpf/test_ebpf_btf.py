"""check_layout against BTF made by hand, and decode_type on raw btf_type words."""

from __future__ import annotations

import ctypes
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.ebpf.btf import (
    BtfKind,
    BtfMember,
    BtfSecinfo,
    BtfType,
    check_layout,
    decode_type,
    resolve,
    size_of,
    words_after_header,
)
from hybridmesh.ebpf.errors import BtfLayoutError

SCALARS = [ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64]


class FakeBtf:
    """A BtfView over a dict, with a helper that records a ctypes type as the compiler would."""

    def __init__(self) -> None:
        self.types: dict[int, BtfType] = {0: BtfType(0, BtfKind.UNKN)}

    def type_by_id(self, type_id: int) -> BtfType:
        return self.types[type_id]

    def add(self, kind: BtfKind, name: str = "", **fields: Any) -> int:
        type_id = len(self.types)
        self.types[type_id] = BtfType(type_id, kind, name, **fields)
        return type_id

    def mirror(self, ctype: type[Any], name: str = "") -> int:
        """BTF for a ctypes type, each scalar behind a typedef as in kernel headers."""
        if issubclass(ctype, ctypes.Structure | ctypes.Union):
            members = tuple(
                BtfMember(f[0], self.mirror(f[1]), getattr(ctype, f[0]).offset * 8)
                for f in ctype._fields_
            )
            kind = BtfKind.UNION if issubclass(ctype, ctypes.Union) else BtfKind.STRUCT
            return self.add(
                kind, name or ctype.__name__, size=ctypes.sizeof(ctype), members=members
            )
        if issubclass(ctype, ctypes.Array):
            return self.add(
                BtfKind.ARRAY, ref=self.mirror(cast(type[Any], ctype._type_)), nelems=ctype._length_
            )
        base = self.add(BtfKind.INT, "unsigned", size=ctypes.sizeof(ctype))
        return self.add(BtfKind.TYPEDEF, f"__u{8 * ctypes.sizeof(ctype)}", ref=base)


class Inner(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint16), ("b", ctypes.c_uint16)]


class Outer(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_uint32),
        ("inner", Inner),
        ("bytes", ctypes.c_uint8 * 6),
        ("y", ctypes.c_uint64),
    ]


def test_a_faithful_mirror_passes() -> None:
    btf = FakeBtf()
    check_layout(Outer, btf, btf.mirror(Outer), "map m value")


def test_scalar_keys_are_checked_by_size() -> None:
    btf = FakeBtf()
    key = btf.mirror(ctypes.c_uint32)
    check_layout(ctypes.c_uint32, btf, key, "map m key")
    with pytest.raises(BtfLayoutError, match="size 8 in Python, 4 in BTF"):
        check_layout(ctypes.c_uint64, btf, key, "map m key")


def test_every_difference_is_listed() -> None:
    class Drifted(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint16), ("inner", Inner), ("extra", ctypes.c_uint8)]

    btf = FakeBtf()
    with pytest.raises(BtfLayoutError) as info:
        check_layout(Drifted, btf, btf.mirror(Outer), "map m value")
    text = info.value.message
    assert "size 8 in Python, 24 in BTF" in text
    assert ".x: size 2 in Python, 4 in BTF" in text
    assert ".inner: offset 2 in Python, 4 in BTF" in text
    assert ".extra: not in BTF" in text
    assert ".bytes: missing in Python" in text
    assert ".y: missing in Python" in text
    assert "ctypes mirror" in info.value.hint


def test_nested_struct_differences_name_the_path() -> None:
    class OtherInner(ctypes.Structure):
        _fields_ = [("b", ctypes.c_uint16), ("a", ctypes.c_uint16)]

    class Outer2(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint32), ("inner", OtherInner)]

    class Expected(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint32), ("inner", Inner)]

    btf = FakeBtf()
    with pytest.raises(BtfLayoutError, match=r"\.inner\.a: offset 2 in Python, 0 in BTF"):
        check_layout(Outer2, btf, btf.mirror(Expected), "v")


def test_struct_against_scalar_and_union_against_struct() -> None:
    class AsUnion(ctypes.Union):
        _fields_ = [("a", ctypes.c_uint16), ("b", ctypes.c_uint16)]

    btf = FakeBtf()
    with pytest.raises(BtfLayoutError, match="scalar c_uint in Python"):
        check_layout(ctypes.c_uint32, btf, btf.mirror(Inner), "k")
    with pytest.raises(BtfLayoutError, match="Python has a union, BTF a struct"):
        check_layout(AsUnion, btf, btf.mirror(Inner), "k")


def test_bitfields_are_refused() -> None:
    class Bits(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32, 1), ("b", ctypes.c_uint32, 31)]

    btf = FakeBtf()
    member_type = btf.mirror(ctypes.c_uint32)
    t = btf.add(
        BtfKind.STRUCT, "bits", size=4,
        members=(BtfMember("a", member_type, 0, 1), BtfMember("b", member_type, 1, 31)),
    )  # fmt: skip
    with pytest.raises(BtfLayoutError, match="bitfields are not supported"):
        check_layout(Bits, btf, t, "v")


def test_a_map_without_btf_types_is_refused() -> None:
    with pytest.raises(BtfLayoutError, match="no BTF type") as info:
        check_layout(ctypes.c_uint32, FakeBtf(), 0, "map m key")
    assert "__type(key" in info.value.hint


def test_resolve_and_size_follow_modifiers_arrays_and_pointers() -> None:
    btf = FakeBtf()
    u32 = btf.add(BtfKind.INT, "unsigned int", size=4)
    be32 = btf.add(BtfKind.TYPEDEF, "__be32", ref=btf.add(BtfKind.TYPEDEF, "__u32", ref=u32))
    const = btf.add(BtfKind.CONST, ref=btf.add(BtfKind.VOLATILE, ref=be32))
    assert resolve(btf, const).id == u32
    assert size_of(btf, btf.add(BtfKind.ARRAY, ref=const, nelems=5)) == 20
    assert size_of(btf, btf.add(BtfKind.PTR, ref=u32)) == 8
    with pytest.raises(BtfLayoutError, match="has no size"):
        size_of(btf, btf.add(BtfKind.FUNC_PROTO, ref=u32))


@st.composite
def structs(draw: st.DrawFn) -> type[ctypes.Structure]:
    scalars = draw(st.lists(st.sampled_from(SCALARS), min_size=1, max_size=8))
    fields = [(f"f{i}", t) for i, t in enumerate(scalars)]
    return type("Drawn", (ctypes.Structure,), {"_fields_": fields})


@given(structs(), st.data())
def test_any_struct_matches_itself_and_no_reordering_of_unequal_fields(
    ctype: type[ctypes.Structure], data: st.DataObject
) -> None:
    btf = FakeBtf()
    check_layout(ctype, btf, btf.mirror(ctype), "v")
    fields = list(ctype._fields_)
    i = data.draw(st.integers(0, len(fields) - 1))
    j = data.draw(st.integers(0, len(fields) - 1))
    if ctypes.sizeof(fields[i][1]) == ctypes.sizeof(fields[j][1]):
        return
    fields[i], fields[j] = fields[j], fields[i]
    shuffled = type("Shuffled", (ctypes.Structure,), {"_fields_": fields})
    with pytest.raises(BtfLayoutError):
        check_layout(shuffled, btf, btf.mirror(ctype), "v")


# --- decode_type -------------------------------------------------------------------------------


def info(kind: BtfKind, vlen: int = 0, kflag: bool = False) -> int:
    return (int(kflag) << 31) | (kind << 24) | vlen


NAMES = {0: "", 1: "hm_svc_key", 12: "vip", 16: "port", 21: ".rodata"}


def test_decode_struct_members_with_and_without_kflag() -> None:
    words = [1, info(BtfKind.STRUCT, 2), 8, 12, 3, 0, 16, 4, 32]
    t = decode_type(7, words, NAMES.__getitem__, str)
    assert t == BtfType(7, BtfKind.STRUCT, "hm_svc_key", 8, members=(
        BtfMember("vip", 3, 0), BtfMember("port", 4, 32)))  # fmt: skip
    bitfields = [1, info(BtfKind.STRUCT, 1, kflag=True), 4, 12, 3, (3 << 24) | 5]
    assert decode_type(7, bitfields, NAMES.__getitem__, str).members == (BtfMember("vip", 3, 5, 3),)


def test_decode_datasec_names_its_variables() -> None:
    words = [21, info(BtfKind.DATASEC, 1), 4, 9, 0, 1]
    t = decode_type(30, words, NAMES.__getitem__, lambda type_id: f"var{type_id}")
    assert t.secinfos == (BtfSecinfo("var9", 9, 0, 1),)
    assert t.size == 4


def test_decode_array_int_and_modifier() -> None:
    assert decode_type(5, [0, info(BtfKind.ARRAY), 0, 2, 3, 16], NAMES.__getitem__, str) == (
        BtfType(5, BtfKind.ARRAY, ref=2, nelems=16)
    )
    assert decode_type(2, [0, info(BtfKind.INT), 4, 32], NAMES.__getitem__, str).size == 4
    assert decode_type(3, [12, info(BtfKind.TYPEDEF), 2], NAMES.__getitem__, str) == BtfType(
        3, BtfKind.TYPEDEF, "vip", ref=2
    )


@pytest.mark.parametrize(
    ("kind", "vlen", "words"),
    [
        (BtfKind.STRUCT, 3, 9),
        (BtfKind.DATASEC, 2, 6),
        (BtfKind.ENUM, 4, 8),
        (BtfKind.FUNC_PROTO, 2, 4),
        (BtfKind.ENUM64, 2, 6),
        (BtfKind.INT, 0, 1),
        (BtfKind.ARRAY, 0, 3),
        (BtfKind.VAR, 0, 1),
        (BtfKind.TYPEDEF, 0, 0),
        (BtfKind.PTR, 0, 0),
    ],
)
def test_words_after_header(kind: BtfKind, vlen: int, words: int) -> None:
    assert words_after_header(info(kind, vlen)) == words
