"""BTF types as plain values, and the check that a ctypes mirror matches one.

Kernel and userspace share a struct through one C header (``bpf/x.h``); Python cannot include
it, so each loader mirrors the struct as a ``ctypes.Structure``. The compiler records the real
layout in the object's BTF, and :func:`check_layout` compares the two field by field (size,
every member's offset and size, no member missing on either side) — the check Cilium runs
between its Go structs and its objects. Pure: the BTF comes through the :class:`BtfView`
protocol, which ``_libbpf`` implements over libbpf and the unit tests implement with a dict.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hybridmesh.ebpf.errors import BtfLayoutError

if TYPE_CHECKING:
    from ctypes import _CData

__all__ = [
    "HEADER_WORDS",
    "BtfKind",
    "BtfMember",
    "BtfSecinfo",
    "BtfType",
    "BtfView",
    "check_layout",
    "decode_type",
    "resolve",
    "size_of",
    "words_after_header",
]


class BtfKind(enum.IntEnum):
    """BTF_KIND_* from linux/btf.h."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


_MODIFIERS = frozenset(
    {BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG}
)
_SIZED = frozenset(
    {BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.FLOAT}
)
_POINTER_SIZE = 8


@dataclass(frozen=True)
class BtfMember:
    """One struct/union member; ``bit_offset`` from the start of the struct."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True)
class BtfSecinfo:
    """One variable of a DATASEC (e.g. a ``const volatile`` global in ``.rodata``)."""

    name: str
    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class BtfType:
    """One decoded BTF type. ``size`` for sized kinds, ``ref`` for modifiers/ptr/var/array."""

    id: int
    kind: BtfKind
    name: str = ""
    size: int = 0
    ref: int = 0
    nelems: int = 0
    members: tuple[BtfMember, ...] = ()
    secinfos: tuple[BtfSecinfo, ...] = ()


HEADER_WORDS = 3
"""``struct btf_type`` is name_off, info, size/type: three __u32s."""

_TRIPLES = frozenset({BtfKind.STRUCT, BtfKind.UNION, BtfKind.DATASEC})  # 3 words per vlen entry
_PAIRS = frozenset({BtfKind.ENUM, BtfKind.FUNC_PROTO})  # 2 words per vlen entry


def _unpack_info(info: int) -> tuple[BtfKind, int, bool]:
    return BtfKind((info >> 24) & 0x1F), info & 0xFFFF, bool(info >> 31)


def words_after_header(info: int) -> int:
    """How many __u32s of kind-specific data follow a type header with this ``info`` word."""
    kind, vlen, _ = _unpack_info(info)
    if kind in _TRIPLES:
        return 3 * vlen
    if kind in _PAIRS:
        return 2 * vlen
    if kind == BtfKind.ENUM64:
        return 3 * vlen
    return {BtfKind.INT: 1, BtfKind.ARRAY: 3, BtfKind.VAR: 1, BtfKind.DECL_TAG: 1}.get(kind, 0)


def decode_type(
    type_id: int, words: Sequence[int], name_at: Callable[[int], str],
    type_name: Callable[[int], str],
) -> BtfType:  # fmt: skip
    """One raw ``struct btf_type`` (header words, then its kind's data) as a :class:`BtfType`.

    ``name_at`` reads the string section; ``type_name`` names another type (a DATASEC entry
    points at a VAR whose name is the variable's).
    """
    name_off, info, size_or_type = words[:HEADER_WORDS]
    kind, vlen, kflag = _unpack_info(info)
    name, rest = name_at(name_off), words[HEADER_WORDS:]
    triples = [tuple(rest[i : i + 3]) for i in range(0, 3 * vlen, 3)] if kind in _TRIPLES else []
    if kind in (BtfKind.STRUCT, BtfKind.UNION):
        members = tuple(
            BtfMember(name_at(n), t, off & 0xFFFFFF if kflag else off, off >> 24 if kflag else 0)
            for n, t, off in triples
        )
        return BtfType(type_id, kind, name, size_or_type, members=members)
    if kind == BtfKind.DATASEC:
        infos = tuple(BtfSecinfo(type_name(t), t, off, size) for t, off, size in triples)
        return BtfType(type_id, kind, name, size_or_type, secinfos=infos)
    if kind == BtfKind.ARRAY:
        return BtfType(type_id, kind, name, ref=rest[0], nelems=rest[2])
    if kind in _SIZED:
        return BtfType(type_id, kind, name, size_or_type)
    return BtfType(type_id, kind, name, ref=size_or_type)


class BtfView(Protocol):
    """What the checks need from a BTF: types by id."""

    def type_by_id(self, type_id: int) -> BtfType: ...


def resolve(view: BtfView, type_id: int) -> BtfType:
    """The type behind typedefs and qualifiers (``__be32`` → ``unsigned int``)."""
    t = view.type_by_id(type_id)
    while t.kind in _MODIFIERS:
        t = view.type_by_id(t.ref)
    return t


def size_of(view: BtfView, type_id: int) -> int:
    """Size in bytes of a type, as the compiler laid it out."""
    t = resolve(view, type_id)
    if t.kind in _SIZED or t.kind == BtfKind.DATASEC:
        return t.size
    if t.kind == BtfKind.ARRAY:
        return t.nelems * size_of(view, t.ref)
    if t.kind == BtfKind.PTR:
        return _POINTER_SIZE
    raise BtfLayoutError(f"BTF type [{type_id}] {t.kind.name} {t.name!r} has no size")


def _describe(t: BtfType) -> str:
    return f"{t.kind.name.lower()} {t.name}" if t.name else f"[{t.id}] {t.kind.name.lower()}"


def _struct_problems(ctype: type[Any], view: BtfView, t: BtfType, where: str) -> list[str]:
    """Every difference between a Structure/Union and a BTF struct/union, as sentences."""
    want = BtfKind.UNION if issubclass(ctype, ctypes.Union) else BtfKind.STRUCT
    if t.kind != want:
        return [f"{where}: Python has a {want.name.lower()}, BTF a {t.kind.name.lower()}"]
    problems = []
    if ctypes.sizeof(ctype) != t.size:
        problems.append(f"{where}: size {ctypes.sizeof(ctype)} in Python, {t.size} in BTF")
    members = {m.name: m for m in t.members}
    fields = [f[0] for f in ctype._fields_]
    for name in fields:
        member = members.get(name)
        if member is None:
            problems.append(f"{where}.{name}: not in BTF")
            continue
        problems.extend(_member_problems(ctype, name, view, member, where))
    problems.extend(f"{where}.{name}: missing in Python" for name in members if name not in fields)
    return problems


def _member_problems(
    ctype: type[Any], name: str, view: BtfView, member: BtfMember, where: str
) -> list[str]:
    field = getattr(ctype, name)
    spec = next(f for f in ctype._fields_ if f[0] == name)
    here = f"{where}.{name}"
    if member.bitfield_size or len(spec) > 2:
        return [f"{here}: bitfields are not supported in mirrored structs"]
    problems = []
    if member.bit_offset != field.offset * 8:
        btf_at = f"{member.bit_offset // 8}" if member.bit_offset % 8 == 0 else "a bit offset"
        problems.append(f"{here}: offset {field.offset} in Python, {btf_at} in BTF")
    problems.extend(_type_problems(spec[1], view, member.type_id, here))
    return problems


def _type_problems(ctype: type[Any], view: BtfView, type_id: int, where: str) -> list[str]:
    t = resolve(view, type_id)
    if issubclass(ctype, ctypes.Structure | ctypes.Union):
        return _struct_problems(ctype, view, t, where)
    if t.kind in (BtfKind.STRUCT, BtfKind.UNION):
        return [f"{where}: {_describe(t)} in BTF, scalar {ctype.__name__} in Python"]
    btf_size = size_of(view, type_id)
    if ctypes.sizeof(ctype) != btf_size:
        return [f"{where}: size {ctypes.sizeof(ctype)} in Python, {btf_size} in BTF"]
    return []


def check_layout(ctype: type[_CData], view: BtfView, type_id: int, what: str) -> None:
    """Raise :class:`BtfLayoutError` listing every way ``ctype`` differs from BTF ``type_id``.

    ``what`` names the place for the message (e.g. ``"map services key"``).
    """
    if type_id == 0:
        raise BtfLayoutError(
            f"{what}: the object has no BTF type for it",
            "declare the map with __type(key, ...) / __type(value, ...) so the layout is checkable",
        )
    t = resolve(view, type_id)
    problems = _type_problems(ctype, view, type_id, f"{what} ({_describe(t)})")
    if problems:
        raise BtfLayoutError(
            f"{what}: Python type {ctype.__name__} does not match the object's BTF:\n  "
            + "\n  ".join(problems),
            "update the ctypes mirror to the C header it copies (or rebuild: ./run setup)",
        )
