"""The build's plan and stamps, with the tools replaced by fakes (no clang, no kernel BTF)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybridmesh.ebpf import build
from hybridmesh.ebpf.errors import BuildError

SOURCE = "int x;\n"


class FakeTools:
    """Records the commands the build runs; 'compiles' by writing the -o file."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def run(self, command: Sequence[str], what: str) -> bytes:
        self.commands.append(list(command))
        if "-o" in command:
            Path(command[command.index("-o") + 1]).write_bytes(b"\x7fELF")
            return b""
        return b"struct task_struct {};\n"

    def compiled(self) -> list[str]:
        return [Path(c[c.index("-c") + 1]).name for c in self.commands if "-c" in c]

    def dumps(self) -> int:
        return sum(1 for c in self.commands if "btf" in c)


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools()
    monkeypatch.setattr(build, "_run", fake.run)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A bpf dir with two programs and a shared header, and a fake kernel BTF file."""
    bpf = tmp_path / "bpf"
    bpf.mkdir()
    (bpf / "a.bpf.c").write_text(SOURCE)
    (bpf / "b.bpf.c").write_text(SOURCE)
    (bpf / "shared.h").write_text("struct s { int x; };\n")
    btf = tmp_path / "vmlinux.btf"
    btf.write_bytes(b"BTF one")
    return bpf, btf


def test_clang_command_is_co_re_for_bpf() -> None:
    cmd = build.clang_command("clang", Path("/src/bpf/x.bpf.c"))
    assert cmd[0] == "clang"
    for flag in ("-O2", "-g", "-D__TARGET_ARCH_x86", "-I/src/bpf", "-I/usr/include"):
        assert flag in cmd
    assert cmd[cmd.index("-target") + 1] == "bpf"
    assert cmd[cmd.index("-c") + 1] == "/src/bpf/x.bpf.c"
    assert cmd[cmd.index("-o") + 1] == "/src/bpf/x.bpf.o"


def test_object_stamp_covers_command_and_every_input() -> None:
    base = build.object_stamp(["clang", "-O2"], [("a.c", b"1"), ("h.h", b"2")])
    assert base == build.object_stamp(["clang", "-O2"], [("h.h", b"2"), ("a.c", b"1")])
    assert base != build.object_stamp(["clang", "-O1"], [("a.c", b"1"), ("h.h", b"2")])
    assert base != build.object_stamp(["clang", "-O2"], [("a.c", b"1"), ("h.h", b"3")])
    assert base != build.object_stamp(["clang", "-O2"], [("a.c", b"1"), ("g.h", b"2")])


def test_vmlinux_h_is_regenerated_only_for_another_kernel(
    tools: FakeTools, tree: tuple[Path, Path]
) -> None:
    bpf, btf = tree
    assert build.ensure_vmlinux_h(bpf, btf)
    header = (bpf / "vmlinux.h").read_text()
    assert header.startswith("/* hybridmesh vmlinux.h: kernel BTF sha256=")
    assert header.endswith("struct task_struct {};\n")
    assert not build.ensure_vmlinux_h(bpf, btf)
    btf.write_bytes(b"BTF two")
    assert build.ensure_vmlinux_h(bpf, btf)
    assert tools.dumps() == 2


def test_objects_rebuild_only_when_an_input_changes(
    tools: FakeTools, tree: tuple[Path, Path]
) -> None:
    bpf, btf = tree
    first = build.build(bpf, btf)
    assert first.vmlinux_regenerated
    assert [p.name for p in first.compiled] == ["a.bpf.o", "b.bpf.o"]
    second = build.build(bpf, btf)
    assert (second.compiled, len(second.up_to_date)) == ((), 2)

    (bpf / "a.bpf.c").write_text(SOURCE + "int y;\n")
    assert [p.name for p in build.build(bpf, btf).compiled] == ["a.bpf.o"]
    (bpf / "shared.h").write_text("struct s { long x; };\n")  # every program may include it
    assert len(build.build(bpf, btf).compiled) == 2
    (bpf / "b.bpf.o").unlink()
    assert [p.name for p in build.build(bpf, btf).compiled] == ["b.bpf.o"]
    btf.write_bytes(b"another kernel")
    again = build.build(bpf, btf)
    assert again.vmlinux_regenerated and len(again.compiled) == 2


def test_vmlinux_h_counts_by_its_stamp_line_only(tools: FakeTools, tree: tuple[Path, Path]) -> None:
    """Hashing 3 MB of vmlinux.h on every run would cost; its first line already says it all."""
    bpf, btf = tree
    build.build(bpf, btf)
    with (bpf / "vmlinux.h").open("a") as f:
        f.write("/* appended */\n")
    assert build.build(bpf, btf).compiled == ()


def test_missing_compiler_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tools: FakeTools, tree: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    bpf, btf = tree
    with pytest.raises(BuildError) as info:
        build.build(bpf, btf)
    assert "bpftool not found" in info.value.message
    assert "./run setup" in info.value.hint


def test_unreadable_kernel_btf_is_a_build_error(tools: FakeTools, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="CONFIG_DEBUG_INFO_BTF"):
        build.ensure_vmlinux_h(tmp_path, tmp_path / "absent")


def test_compiler_failure_shows_its_stderr(
    monkeypatch: pytest.MonkeyPatch, tree: tuple[Path, Path]
) -> None:
    bpf, _ = tree
    (bpf / "a.bpf.c").write_text("this is not C\n")
    with pytest.raises(BuildError) as info:
        build._run(["sh", "-c", "echo 'a.bpf.c:1: error: expected' >&2; exit 1"], "clang a")
    assert "clang a failed (exit 1)" in info.value.message
    assert "a.bpf.c:1: error: expected" in info.value.message


def test_main_reports_errors_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def fail(bpf_dir: Path) -> build.BuildResult:
        raise BuildError("clang not found on PATH", "run ./run setup")

    monkeypatch.setattr(build, "build", fail)
    assert build.main(["--bpf-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "error: clang not found on PATH (hint: run ./run setup)\n"


def test_main_is_quiet_when_up_to_date(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(build, "build", lambda bpf_dir: build.BuildResult(False, (), (), 0.001))
    assert build.main(["-q", "--bpf-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
