"""Finding and duplicating a process's listening socket (what sk_lookup's sockhash needs)."""

from __future__ import annotations

import os
import socket

import pytest

from hybridmesh.ebpf._pidfd import find_listener, listening_inodes, take_listener
from hybridmesh.ebpf.capture import CaptureConfig

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:3A9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1
   1: 0100007F:3A99 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1
   2: 0100007F:3A9E 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1003 1
   3: 00000000:3A9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1
"""


def test_listening_inodes_keeps_listeners_on_the_port_only() -> None:
    # 0x3A9E = 15006: a listener (kept), an established socket on it (not), a listener on
    # 15001 (not), an orphaned entry without inode (not)
    assert listening_inodes(TCP, 15006) == {1001}
    assert listening_inodes(TCP, 15001) == {1002}
    assert listening_inodes(TCP, 8080) == set()


def test_our_own_listener_is_found_and_duplicated() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert find_listener([os.getpid()], port) == (os.getpid(), server.fileno())
        dup = take_listener([os.getpid()], port)
        assert dup is not None and dup != server.fileno()
        try:
            copy = socket.socket(fileno=os.dup(dup))
            assert copy.getsockname() == server.getsockname()  # the same socket
            copy.close()
        finally:
            os.close(dup)


def test_no_listener_and_vanished_processes_give_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening
        port = s.getsockname()[1]
        assert take_listener([os.getpid(), 2**22 + 1], port) is None


def test_capture_config_refuses_ports_that_would_loop() -> None:
    with pytest.raises(ValueError, match="own listener ports"):
        CaptureConfig(excluded_inbound_ports=(15020,))
    with pytest.raises(ValueError, match="TCP ports"):
        CaptureConfig(outbound_port=0)
    with pytest.raises(ValueError, match="at most 8"):
        CaptureConfig(excluded_inbound_ports=tuple(range(15000, 15010)))
