"""The one module that calls libbpf (Debian 12's libbpf1 1.1.2, ``libbpf.so.1``) through ctypes.

Everything else in hybridmesh speaks to the kernel through the small objects here:
:class:`BpfObject` (open → set ``.rodata`` / pin paths → load), :class:`BpfProgram`,
:class:`BpfMap`, :class:`BpfLink` (attach, pin, atomic program replace), :class:`Btf`, and the
map element calls by fd. libbpf 1.x returns ``-errno`` (or NULL with ``errno`` set); each call is
checked and a failure becomes a :class:`BpfError` that carries a hint and whatever libbpf logged
during the call — for a rejected program, the verifier's log.

libbpf's own output goes to the ``hybridmesh.ebpf.libbpf`` logger (libbpf_set_print). The
callback gets a C ``va_list``; on x86-64 that is a pointer, handed as-is to libc's vasprintf.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ctypes import POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridmesh.ebpf.btf import HEADER_WORDS, BtfKind, BtfType, decode_type, words_after_header
from hybridmesh.ebpf.errors import BpfError

if TYPE_CHECKING:
    from ctypes import _CData

__all__ = [
    "LIBBPF",
    "BpfLink",
    "BpfMap",
    "BpfObject",
    "BpfProgram",
    "Btf",
    "ProgInfo",
    "RingBuffer",
    "enable_run_stats",
    "map_delete",
    "map_lookup",
    "map_next_key",
    "map_update",
    "num_possible_cpus",
    "obj_get",
    "prog_attach",
    "prog_detach",
    "prog_info",
]

LIBBPF = "libbpf.so.1"
log = logging.getLogger("hybridmesh.ebpf.libbpf")

_P = c_void_p
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_strerror": (c_int, [c_int, c_char_p, c_size_t]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (_P, [c_char_p, _P]),
    "bpf_object__load": (c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__find_program_by_name": (_P, [_P, c_char_p]),
    "bpf_object__find_map_by_name": (_P, [_P, c_char_p]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_program__fd": (c_int, [_P]),
    "bpf_program__attach_cgroup": (_P, [_P, c_int]),
    "bpf_program__attach_netns": (_P, [_P, c_int]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_prog_attach": (c_int, [c_int, c_int, c_int, c_uint32]),
    "bpf_prog_detach2": (c_int, [c_int, c_int, c_int]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "ring_buffer__new": (_P, [c_int, _P, _P, _P]),
    "ring_buffer__add": (c_int, [_P, c_int, _P, _P]),
    "ring_buffer__poll": (c_int, [_P, c_int]),
    "ring_buffer__consume": (c_int, [_P]),
    "ring_buffer__epoll_fd": (c_int, [_P]),
    "ring_buffer__free": (None, [_P]),
    "bpf_map__name": (c_char_p, [_P]),
    "bpf_map__fd": (c_int, [_P]),
    "bpf_map__type": (c_int, [_P]),
    "bpf_map__key_size": (c_uint32, [_P]),
    "bpf_map__value_size": (c_uint32, [_P]),
    "bpf_map__set_max_entries": (c_int, [_P, c_uint32]),
    "bpf_map__is_internal": (c_bool, [_P]),
    "bpf_map__btf_key_type_id": (c_uint32, [_P]),
    "bpf_map__btf_value_type_id": (c_uint32, [_P]),
    "bpf_map__set_pin_path": (c_int, [_P, c_char_p]),
    "bpf_map__initial_value": (_P, [_P, POINTER(c_size_t)]),
    "bpf_link__open": (_P, [c_char_p]),
    "bpf_link__fd": (c_int, [_P]),
    "bpf_link__pin": (c_int, [_P, c_char_p]),
    "bpf_link__unpin": (c_int, [_P]),
    "bpf_link__update_program": (c_int, [_P, _P]),
    "bpf_link__detach": (c_int, [_P]),
    "bpf_link__destroy": (c_int, [_P]),
    "bpf_map_update_elem": (c_int, [c_int, _P, _P, c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, _P, _P]),
    "bpf_map_delete_elem": (c_int, [c_int, _P]),
    "bpf_map_get_next_key": (c_int, [c_int, _P, _P]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, _P, POINTER(c_uint32)]),
    "bpf_enable_stats": (c_int, [c_int]),
    "btf__type_by_id": (_P, [_P, c_uint32]),
    "btf__name_by_offset": (c_char_p, [_P, c_uint32]),
    "btf__find_by_name_kind": (c_int, [_P, c_char_p, c_uint32]),
    "btf__load_vmlinux_btf": (_P, []),
    "btf__free": (None, [_P]),
}

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}  # enum libbpf_print_level
_capture = threading.local()
_HINTS = {
    errno.EPERM: "needs root (CAP_BPF and CAP_NET_ADMIN/CAP_SYS_ADMIN)",
    errno.EACCES: "the verifier rejected the program: its log follows",
    errno.ENOENT: "nothing there: not pinned, not loaded, or no such entry",
    errno.E2BIG: "the map is full (raise max_entries)",
    errno.EEXIST: "already exists (pinned path taken, or BPF_NOEXIST on a present key)",
    errno.EBUSY: "in use (a map or link pinned by another loader?)",
}


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.vasprintf.argtypes = [POINTER(c_void_p), c_char_p, c_void_p]
    libc.vasprintf.restype = c_int
    libc.free.argtypes = [c_void_p]
    libc.free.restype = None
    return libc


def _format(fmt: bytes, args: int | None) -> str:
    out = c_void_p()
    n = _libc().vasprintf(ctypes.byref(out), fmt, args)
    if n < 0 or not out.value:
        return fmt.decode(errors="replace")
    try:
        return ctypes.string_at(out.value, n).decode(errors="replace")
    finally:
        _libc().free(out)


def _on_print(level: int, fmt: bytes, args: int | None) -> int:
    """libbpf's print callback: to logging, and to the capture of the call in progress."""
    lines: list[str] | None = getattr(_capture, "lines", None)
    py_level = _LEVELS.get(level, logging.DEBUG)
    keep = lines is not None and py_level > logging.DEBUG
    if keep or log.isEnabledFor(py_level):
        text = _format(fmt, args)
        if keep and lines is not None:
            lines.append(text)
        log.log(py_level, "%s", text.rstrip("\n"))
    return 0


_print_callback = _PRINT_FN(_on_print)  # module global: libbpf keeps the raw pointer


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBBPF, use_errno=True)
    except OSError as exc:
        raise BpfError(
            f"cannot load {LIBBPF}: {exc}", "run ./run setup (installs libbpf1)"
        ) from exc
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    lib.libbpf_set_print.argtypes = [_PRINT_FN]
    lib.libbpf_set_print.restype = _PRINT_FN
    lib.libbpf_set_print(_print_callback)
    return lib


@contextmanager
def _captured() -> Iterator[list[str]]:
    """Collect libbpf's warnings/info printed by the calls inside, for the error if one fails."""
    lines: list[str] = []
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = None


def _strerror(code: int) -> str:
    buf = ctypes.create_string_buffer(256)
    _lib().libbpf_strerror(code, buf, len(buf))
    return buf.value.decode(errors="replace") or os.strerror(code)


def _error(code: int, what: str, lines: list[str] | None = None, hint: str = "") -> BpfError:
    message = f"{what}: {_strerror(code)} (errno {code})"
    return BpfError(message, hint or _HINTS.get(code, ""), code, "".join(lines or []).rstrip())


def _check(ret: int, what: str, lines: list[str] | None = None, hint: str = "") -> int:
    if ret < 0:
        raise _error(-ret, what, lines, hint)
    return ret


def _check_ptr(ptr: int | None, what: str, lines: list[str] | None = None, hint: str = "") -> int:
    if not ptr:
        raise _error(ctypes.get_errno() or errno.EINVAL, what, lines, hint)
    return ptr


def num_possible_cpus() -> int:
    """What per-CPU map values are sized by (possible, not online, CPUs)."""
    return _check(_lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


# --- BTF ---------------------------------------------------------------------------------------


class Btf:
    """A BTF (an object's, or the kernel's) decoded into :class:`BtfType` values on demand."""

    def __init__(self, ptr: int, owner: object | None) -> None:
        self._ptr = ptr
        self._owner = owner  # keeps the BpfObject (which owns this BTF) alive
        if owner is None:
            weakref.finalize(self, _lib().btf__free, ptr)

    @classmethod
    def vmlinux(cls) -> Btf:
        """The running kernel's BTF (/sys/kernel/btf/vmlinux)."""
        return cls(_check_ptr(_lib().btf__load_vmlinux_btf(), "load kernel BTF"), None)

    def _name(self, offset: int) -> str:
        raw = _lib().btf__name_by_offset(self._ptr, offset)
        return raw.decode() if raw else ""

    def _words(self, type_id: int) -> ctypes.Array[c_uint32]:
        ptr = _check_ptr(_lib().btf__type_by_id(self._ptr, type_id), f"BTF type [{type_id}]")
        info = c_uint32.from_address(ptr + 4).value
        return (c_uint32 * (HEADER_WORDS + words_after_header(info))).from_address(ptr)

    def type_by_id(self, type_id: int) -> BtfType:
        words = list(self._words(type_id))
        return decode_type(type_id, words, self._name, lambda t: self._name(self._words(t)[0]))

    def find(self, name: str, kind: BtfKind) -> int:
        """Type id of ``name`` of ``kind``; raises when absent."""
        found = _lib().btf__find_by_name_kind(self._ptr, name.encode(), kind)
        return _check(found, f"BTF has no {kind.name.lower()} {name!r}")


# --- objects, programs, maps, links --------------------------------------------------------


class BpfObject:
    """One ELF object file: open, configure (``.rodata``, pin paths, sizes), load, close.

    Closing frees the programs and maps libbpf holds; pinned maps and links stay in the kernel.
    """

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr = ptr
        self.path = path
        self.loaded = False
        self._close = weakref.finalize(self, _lib().bpf_object__close, ptr)

    @classmethod
    def open(cls, path: Path) -> BpfObject:
        if not path.exists():
            raise BpfError(f"{path}: no such object", "build it: python -m hybridmesh.ebpf.build")
        with _captured() as lines:
            ptr = _lib().bpf_object__open_file(os.fsencode(path), None)
        return cls(_check_ptr(ptr, f"open {path.name}", lines), path)

    @property
    def btf(self) -> Btf:
        return Btf(_check_ptr(_lib().bpf_object__btf(self._ptr), f"{self.path.name} BTF"), self)

    def program(self, name: str) -> BpfProgram:
        ptr = _lib().bpf_object__find_program_by_name(self._ptr, name.encode())
        return BpfProgram(_check_ptr(ptr, f"{self.path.name}: program {name!r}"), name, self)

    def map(self, name: str) -> BpfMap:
        ptr = _lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        return BpfMap(_check_ptr(ptr, f"{self.path.name}: map {name!r}"), self)

    def maps(self) -> list[BpfMap]:
        found, ptr = [], _lib().bpf_object__next_map(self._ptr, None)
        while ptr:
            found.append(BpfMap(ptr, self))
            ptr = _lib().bpf_object__next_map(self._ptr, ptr)
        return found

    def set_rodata(self, name: str, value: _CData) -> None:
        """Set a ``const volatile`` global before load (the verifier then sees a constant)."""
        if self.loaded:
            raise BpfError(f"{name}: .rodata is read-only once the object is loaded")
        rodata = next((m for m in self.maps() if m.internal and m.name.endswith(".rodata")), None)
        if rodata is None:
            raise BpfError(f"{self.path.name} has no .rodata (no const volatile globals)")
        section = self.btf.type_by_id(self.btf.find(".rodata", BtfKind.DATASEC))
        var = next((v for v in section.secinfos if v.name == name), None)
        if var is None or var.size != ctypes.sizeof(value):
            got = f"{var.size} bytes" if var else "absent"
            raise BpfError(
                f".rodata {name}: {got} in {self.path.name}, {ctypes.sizeof(value)} bytes given"
            )
        base = rodata.initial_value()
        ctypes.memmove(base + var.offset, ctypes.addressof(value), var.size)

    def load(self) -> None:
        with _captured() as lines:
            ret = _lib().bpf_object__load(self._ptr)
        stale_pin = any("reuse pinned map" in line for line in lines)
        hint = "a pinned map has another definition: remove its pins for a cold start"
        _check(ret, f"load {self.path.name}", lines, hint if stale_pin else "")
        self.loaded = True

    def close(self) -> None:
        self._close()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BpfProgram:
    def __init__(self, ptr: int, name: str, obj: BpfObject) -> None:
        self._ptr, self.name, self._obj = ptr, name, obj

    @property
    def ptr(self) -> int:
        return self._ptr

    @property
    def fd(self) -> int:
        return _check(_lib().bpf_program__fd(self._ptr), f"program {self.name} fd (not loaded?)")

    def attach_cgroup(self, cgroup: Path) -> BpfLink:
        """Attach to a cgroup v2 directory through a bpf_link (multi-attach, pinnable)."""
        try:
            cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise BpfError(
                f"cannot open cgroup {cgroup}: {exc.strerror}",
                "give a cgroup v2 directory (e.g. under /sys/fs/cgroup/unified)",
                exc.errno or 0,
            ) from exc
        try:
            with _captured() as lines:
                ptr = _lib().bpf_program__attach_cgroup(self._ptr, cgroup_fd)
            return BpfLink(_check_ptr(ptr, f"attach {self.name} to {cgroup}", lines))
        finally:
            os.close(cgroup_fd)

    def attach_netns(self, netns: Path) -> BpfLink:
        """Attach to a network namespace (``sk_lookup``, flow dissector) through a bpf_link.

        ``netns`` is a namespace file such as ``/run/netns/hm-pod-...``; the link holds the
        namespace, not the file.
        """
        try:
            ns_fd = os.open(netns, os.O_RDONLY)
        except OSError as exc:
            raise BpfError(
                f"cannot open network namespace {netns}: {exc.strerror}",
                "give a netns file (e.g. /run/netns/<name> or /proc/<pid>/ns/net)",
                exc.errno or 0,
            ) from exc
        try:
            with _captured() as lines:
                ptr = _lib().bpf_program__attach_netns(self._ptr, ns_fd)
            return BpfLink(_check_ptr(ptr, f"attach {self.name} to netns {netns}", lines))
        finally:
            os.close(ns_fd)

    def attach(self) -> BpfLink:
        """Attach where the program's SEC() says (tracepoint, raw_tp, fentry, ...)."""
        with _captured() as lines:
            ptr = _lib().bpf_program__attach(self._ptr)
        return BpfLink(_check_ptr(ptr, f"attach {self.name}", lines))


class BpfMap:
    def __init__(self, ptr: int, obj: BpfObject) -> None:
        self._ptr, self._obj = ptr, obj
        self.name = (_lib().bpf_map__name(ptr) or b"").decode()

    @property
    def object(self) -> BpfObject:
        return self._obj

    @property
    def fd(self) -> int:
        return _check(_lib().bpf_map__fd(self._ptr), f"map {self.name} fd (not loaded?)")

    @property
    def type(self) -> int:
        return int(_lib().bpf_map__type(self._ptr))

    @property
    def key_size(self) -> int:
        return int(_lib().bpf_map__key_size(self._ptr))

    @property
    def value_size(self) -> int:
        return int(_lib().bpf_map__value_size(self._ptr))

    @property
    def internal(self) -> bool:
        return bool(_lib().bpf_map__is_internal(self._ptr))

    @property
    def btf_key_type_id(self) -> int:
        return int(_lib().bpf_map__btf_key_type_id(self._ptr))

    @property
    def btf_value_type_id(self) -> int:
        return int(_lib().bpf_map__btf_value_type_id(self._ptr))

    def set_pin_path(self, path: Path) -> None:
        """Before load: reuse the map pinned at ``path`` if there is one, else pin it there."""
        ret = _lib().bpf_map__set_pin_path(self._ptr, os.fsencode(path))
        _check(ret, f"map {self.name}: pin path {path}")

    def set_max_entries(self, n: int) -> None:
        _check(_lib().bpf_map__set_max_entries(self._ptr, n), f"map {self.name}: max_entries")

    def initial_value(self) -> int:
        """Address of an internal map's (writable until load) initial contents."""
        size = c_size_t()
        ptr = _lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        return _check_ptr(ptr, f"map {self.name}: initial value")


class BpfLink:
    """An attachment. Pinned, it outlives this process; ``destroy`` only drops our handle."""

    def __init__(self, ptr: int) -> None:
        self._ptr: int | None = ptr

    @classmethod
    def open(cls, path: Path) -> BpfLink:
        with _captured() as lines:
            ptr = _lib().bpf_link__open(os.fsencode(path))
        return cls(_check_ptr(ptr, f"open pinned link {path}", lines))

    def _live(self) -> int:
        if self._ptr is None:
            raise BpfError("link already destroyed")
        return self._ptr

    @property
    def fd(self) -> int:
        return _check(_lib().bpf_link__fd(self._live()), "link fd")

    def pin(self, path: Path) -> None:
        _check(_lib().bpf_link__pin(self._live(), os.fsencode(path)), f"pin link at {path}")

    def unpin(self) -> None:
        _check(_lib().bpf_link__unpin(self._live()), "unpin link")

    def update_program(self, program: BpfProgram) -> None:
        """Atomically swap the attached program: no connect ever runs without one."""
        with _captured() as lines:
            ret = _lib().bpf_link__update_program(self._live(), program.ptr)
        _check(ret, f"replace program on link with {program.name}", lines)

    def detach(self) -> None:
        """Detach now, even while pinned (BPF_LINK_DETACH)."""
        _check(_lib().bpf_link__detach(self._live()), "detach link")

    def destroy(self) -> None:
        """Release our handle (a pinned link stays attached)."""
        if self._ptr is not None:
            _lib().bpf_link__destroy(self._ptr)
            self._ptr = None


# --- map elements by fd --------------------------------------------------------------------


def map_update(fd: int, key: _CData, value: _CData, flags: int = 0) -> None:
    ret = _lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags)
    _check(ret, f"map fd {fd}: update")


def map_lookup(fd: int, key: _CData, value: _CData) -> bool:
    """Fill ``value``; False when the key is absent."""
    ret = _lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    return ret != -errno.ENOENT and _check(ret, f"map fd {fd}: lookup") == 0


def map_delete(fd: int, key: _CData) -> bool:
    """False when the key was absent."""
    ret = _lib().bpf_map_delete_elem(fd, ctypes.byref(key))
    return ret != -errno.ENOENT and _check(ret, f"map fd {fd}: delete") == 0


def map_next_key(fd: int, key: _CData | None, next_key: _CData) -> bool:
    """Fill ``next_key`` with the key after ``key`` (the first when None); False at the end."""
    ret = _lib().bpf_map_get_next_key(
        fd, ctypes.byref(key) if key is not None else None, ctypes.byref(next_key)
    )
    return ret != -errno.ENOENT and _check(ret, f"map fd {fd}: next key") == 0


def obj_get(path: Path) -> int:
    """An fd for the map, program or link pinned at ``path`` (the caller closes it)."""
    with _captured() as lines:
        fd = _lib().bpf_obj_get(os.fsencode(path))
    return _check(fd, f"open pinned object {path}", lines)


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> None:
    """BPF_PROG_ATTACH without a link: how sk_msg/sk_skb programs attach to a sockmap/sockhash.

    Attaching again with the same type replaces the program atomically (the kernel swaps the
    pointer), which is the upgrade path for these attach points: they have no bpf_link in
    Linux 6.x before 6.10, and libbpf 1.1 has no bpf_program__attach_sockmap.
    """
    with _captured() as lines:
        ret = _lib().bpf_prog_attach(prog_fd, target_fd, attach_type, flags)
    _check(ret, f"attach program fd {prog_fd} to fd {target_fd} (type {attach_type})", lines)


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    with _captured() as lines:
        ret = _lib().bpf_prog_detach2(prog_fd, target_fd, attach_type)
    _check(ret, f"detach program fd {prog_fd} from fd {target_fd}", lines)


_RINGBUF_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class RingBuffer:
    """A BPF ring buffer consumer (``BPF_MAP_TYPE_RINGBUF``): records go to ``handler(bytes)``.

    One consumer can read several ring buffers (:meth:`add`). :meth:`poll` waits on libbpf's
    epoll fd; :attr:`epoll_fd` can also be registered with an event loop (readable when a
    record is waiting), then :meth:`consume` drains without blocking. A handler that raises
    stops the drain and the exception propagates from poll/consume: a bug in a decoder is
    loud, not a silently lost stream.
    """

    def __init__(self, map_fd: int, handler: Callable[[bytes], None]) -> None:
        self._handlers: list[Any] = []  # the C callbacks must outlive the ring buffer
        self._error: BaseException | None = None
        cb = self._callback(handler)
        with _captured() as lines:
            ptr = _lib().ring_buffer__new(map_fd, ctypes.cast(cb, c_void_p), None, None)
        self._ptr: int | None = _check_ptr(ptr, f"ring buffer on map fd {map_fd}", lines)

    def _callback(self, handler: Callable[[bytes], None]) -> Any:
        def call(_ctx: int | None, data: int | None, size: int) -> int:
            try:
                handler(ctypes.string_at(data or 0, size))
            except BaseException as exc:  # re-raised by poll/consume, in Python
                self._error = exc
                return -1
            return 0

        cb = _RINGBUF_CB(call)
        self._handlers.append(cb)
        return cb

    def _live(self) -> int:
        if self._ptr is None:
            raise BpfError("ring buffer already closed")
        return self._ptr

    def add(self, map_fd: int, handler: Callable[[bytes], None]) -> None:
        cb = self._callback(handler)
        ret = _lib().ring_buffer__add(self._live(), map_fd, ctypes.cast(cb, c_void_p), None)
        _check(ret, f"add map fd {map_fd} to ring buffer")

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` and consume what arrived; returns the records consumed."""
        ret = _lib().ring_buffer__poll(self._live(), timeout_ms)
        self._raise_pending()
        if ret == -errno.EINTR:
            return 0
        return _check(ret, "ring buffer poll")

    def consume(self) -> int:
        ret = _lib().ring_buffer__consume(self._live())
        self._raise_pending()
        return _check(ret, "ring buffer consume")

    @property
    def epoll_fd(self) -> int:
        return int(_lib().ring_buffer__epoll_fd(self._live()))

    def close(self) -> None:
        if self._ptr is not None:
            _lib().ring_buffer__free(self._ptr)
            self._ptr = None

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- program statistics --------------------------------------------------------------------


class ProgInfo(ctypes.Structure):
    """The head of ``struct bpf_prog_info`` up to ``run_cnt``; the kernel fills what fits.

    Only the fields read here are named; a test checks their offsets against kernel BTF.
    """

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("_unread", ctypes.c_uint8 * 184),  # tag .. prog_tags
        ("run_time_ns", c_uint64),
        ("run_cnt", c_uint64),
    ]


def prog_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD for a program (run_time_ns/run_cnt count while stats are on)."""
    info = ProgInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "prog info")
    return info


def enable_run_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting until the returned fd is closed (BPF_ENABLE_STATS).

    Cheaper to scope than the ``kernel.bpf_stats_enabled`` sysctl, which stays on for everyone.
    """
    return _check(_lib().bpf_enable_stats(0), "enable BPF run-time stats")  # BPF_STATS_RUN_TIME
