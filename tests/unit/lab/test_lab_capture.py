"""Sidecar capture rules: exact shape, exclusions before redirects, idempotent plans."""

from __future__ import annotations

import pytest

from hybridmesh.lab.capture import (
    INBOUND_CHAIN,
    OUTPUT_CHAIN,
    CaptureSpec,
    plan_apply,
    plan_remove,
    render_rules,
)

EMPTY_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""

JUMP_OUT = '-A OUTPUT -m comment --comment "hm: proxy capture" -j HM-PROXY-OUTPUT'
JUMP_IN = '-A PREROUTING -m comment --comment "hm: proxy capture" -j HM-PROXY-INBOUND'


def rules(payload: str, chain: str) -> list[str]:
    return [line for line in payload.splitlines() if line.startswith(f"-A {chain} ")]


def saved_with(*extra: str, chains: bool = True) -> str:
    """An iptables-save dump of a nat table with capture (or parts of it) present."""
    lines = EMPTY_NAT.splitlines()[:-1]
    if chains:
        lines += [f":{INBOUND_CHAIN} - [0:0]", f":{OUTPUT_CHAIN} - [0:0]"]
    return "\n".join([*lines, *extra, "COMMIT", ""])


def test_output_chain_returns_proxy_traffic_and_loopback_before_redirecting() -> None:
    out = rules(render_rules(), OUTPUT_CHAIN)
    assert len(out) == 4
    assert "-m mark --mark 0x539" in out[0] and out[0].endswith("-j RETURN")
    assert "-m owner --uid-owner 1337" in out[1] and out[1].endswith("-j RETURN")
    assert "-o lo -d 127.0.0.0/8" in out[2] and out[2].endswith("-j RETURN")
    assert out[3].endswith("-p tcp -m comment --comment \"hm: outbound capture\" "
                           "-j REDIRECT --to-ports 15001")


def test_inbound_chain_skips_the_proxy_ports_then_redirects_to_15006() -> None:
    inbound = rules(render_rules(), INBOUND_CHAIN)
    assert len(inbound) == 2
    assert "--dports 15020,15021,15008,15001,15006" in inbound[0]
    assert inbound[0].endswith("-j RETURN")
    assert inbound[1].endswith("-j REDIRECT --to-ports 15006")


def test_every_rule_carries_an_hm_comment() -> None:
    for line in render_rules().splitlines():
        if line.startswith("-A"):
            assert '-m comment --comment "hm: ' in line, line


def test_spec_changes_ports_mark_and_drops_the_uid_rule() -> None:
    spec = CaptureSpec(outbound_port=16001, inbound_port=16006, mark=0x10, uid=None,
                       excluded_inbound_ports=(16001, 16006, 16020))
    payload = render_rules(spec)
    assert "--uid-owner" not in payload
    assert "--mark 0x10 " in payload
    assert "--to-ports 16001" in payload and "--to-ports 16006" in payload
    assert "--dports 16001,16006,16020" in payload


def test_spec_refuses_capture_that_would_loop_into_the_proxy() -> None:
    with pytest.raises(ValueError, match="excluded"):
        CaptureSpec(excluded_inbound_ports=(15020,))
    with pytest.raises(ValueError, match="TCP ports"):
        CaptureSpec(outbound_port=0)


def test_first_apply_inserts_both_jumps_first_in_their_hooks() -> None:
    payload = plan_apply(EMPTY_NAT)
    assert payload.startswith("*nat\n")
    assert f":{OUTPUT_CHAIN} - [0:0]" in payload and f":{INBOUND_CHAIN} - [0:0]" in payload
    inserts = [line for line in payload.splitlines() if line.startswith("-I ")]
    assert sorted(inserts) == sorted([
        '-I OUTPUT 1 -m comment --comment "hm: proxy capture" -j HM-PROXY-OUTPUT',
        '-I PREROUTING 1 -m comment --comment "hm: proxy capture" -j HM-PROXY-INBOUND',
    ])
    assert payload.rstrip().endswith("COMMIT")
    assert not any(line.startswith("-D") for line in payload.splitlines())


def test_reapply_only_rebuilds_the_chains() -> None:
    payload = plan_apply(saved_with(JUMP_IN, JUMP_OUT))
    assert not any(line.startswith(("-I ", "-D ")) for line in payload.splitlines())
    assert payload == render_rules()


def test_duplicate_jumps_are_collapsed_to_one() -> None:
    payload = plan_apply(saved_with(JUMP_IN, JUMP_OUT, JUMP_OUT))
    lines = payload.splitlines()
    assert lines.count("-D" + JUMP_OUT[2:]) == 2
    assert sum(1 for line in lines if line.startswith("-I OUTPUT 1")) == 1
    assert not any("PREROUTING" in line for line in lines if line.startswith(("-I", "-D")))


def test_remove_deletes_jumps_then_chains_and_nothing_when_absent() -> None:
    payload = plan_remove(saved_with(JUMP_IN, JUMP_OUT))
    assert payload is not None
    lines = payload.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert lines.index("-D" + JUMP_OUT[2:]) < lines.index(f"-X {OUTPUT_CHAIN}")
    assert f"-F {INBOUND_CHAIN}" in lines and f"-X {INBOUND_CHAIN}" in lines
    assert plan_remove(EMPTY_NAT) is None


def test_remove_ignores_other_tables_and_foreign_rules() -> None:
    services = '-A OUTPUT -m comment --comment "hm: services" -j HM-SERVICES\nCOMMIT'
    saved = EMPTY_NAT.replace("COMMIT", services) + "*filter\n:HM-PROXY-OUTPUT - [0:0]\nCOMMIT\n"
    assert plan_remove(saved) is None
