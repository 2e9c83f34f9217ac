"""Inbound connections steered by sk_lookup carry their destination as the local address."""

from __future__ import annotations

import asyncio
from typing import Any

from hybridmesh.proxy.listener import _steered_dst


class StubTransport(asyncio.Transport):
    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__(extra)


def test_the_local_address_is_the_original_destination() -> None:
    assert _steered_dst(StubTransport({"sockname": ("10.244.1.2", 8080)})) == ("10.244.1.2", 8080)


def test_no_local_address_means_no_destination() -> None:
    assert _steered_dst(StubTransport({})) is None
    assert _steered_dst(StubTransport({"sockname": "/run/x.sock"})) is None
