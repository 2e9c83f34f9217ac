"""kube-proxy-style rules: structure, equal-probability balancing, REJECT, and apply fixups."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.control.model import Endpoint, ServiceInfo, ServicePortInfo
from hybridmesh.lab.servicelb import SERVICES_CHAIN, finalize, render_rules, service_chain


def ep(ip: str, pod: str = "p") -> Endpoint:
    return Endpoint(pod, "shop", ip, node="n1", service_account="sa", placement="none")


def svc(name: str, cip: str, endpoints: tuple[Endpoint, ...], *ports: tuple[int, int]
        ) -> ServiceInfo:
    infos = tuple(ServicePortInfo(f"p{p}", p, t, "http") for p, t in ports or ((80, 8080),))
    return ServiceInfo(name, "shop", cip, infos, {"app": name}, endpoints)


WEB = svc("web", "10.96.0.10", (ep("10.244.2.11"), ep("10.244.1.10")), (80, 8080), (443, 8443))
EMPTY = svc("empty", "10.96.0.11", ())


def table(payload: str, name: str) -> list[str]:
    """The lines of one table's section of a restore payload."""
    section = payload.split(f"*{name}\n", 1)[1]
    return section.split("COMMIT", 1)[0].strip().splitlines()


def test_payload_rebuilds_both_tables_and_declares_every_chain() -> None:
    payload = render_rules([WEB, EMPTY])
    nat, flt = table(payload, "nat"), table(payload, "filter")
    assert nat[0] == f":{SERVICES_CHAIN} - [0:0]"
    assert flt[0] == f":{SERVICES_CHAIN} - [0:0]"
    for port in WEB.ports:
        assert f":{service_chain(WEB, port)} - [0:0]" in nat
    assert payload.count("COMMIT") == 2


def test_service_port_dispatch_and_dnat_use_target_ports() -> None:
    nat = table(render_rules([WEB]), "nat")
    chain = service_chain(WEB, WEB.ports[0])
    assert (f"-A HM-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 "
            f'-m comment --comment "hm: shop/web:80" -j {chain}') in nat
    dnats = [line for line in nat if line.startswith(f"-A {chain} ")]
    targets = [line.rsplit(" ", 1)[1] for line in dnats]
    assert targets == ["10.244.1.10:8080", "10.244.2.11:8080"]  # sorted, target port
    assert all("--dport 443" not in line for line in dnats)


def test_every_rule_carries_its_service_comment() -> None:
    payload = render_rules([WEB, EMPTY])
    rules = [line for line in payload.splitlines() if line.startswith("-A")]
    assert rules
    for line in rules:
        assert re.search(r'-m comment --comment "hm: shop/(web|empty):\d+"', line), line


def test_port_without_endpoints_is_rejected_in_filter_not_natted() -> None:
    payload = render_rules([EMPTY])
    assert table(payload, "nat") == [f":{SERVICES_CHAIN} - [0:0]"]
    assert table(payload, "filter")[1] == (
        "-A HM-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 80 "
        '-m comment --comment "hm: shop/empty:80" -j REJECT --reject-with icmp-port-unreachable')


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    shuffled = svc("web", "10.96.0.10", tuple(reversed(WEB.endpoints)), (443, 8443), (80, 8080))
    assert render_rules([WEB, EMPTY]) == render_rules([EMPTY, shuffled])


def test_headless_and_ipv6_services_are_skipped() -> None:
    payload = render_rules([svc("h", "None", (ep("10.244.1.2"),)), svc("v6", "fd00::1", ())])
    assert payload == render_rules([])


@given(st.integers(min_value=1, max_value=12))
def test_each_endpoint_is_chosen_with_equal_probability(n: int) -> None:
    endpoints = tuple(ep(f"10.244.1.{i + 2}") for i in range(n))
    nat = table(render_rules([svc("web", "10.96.0.10", endpoints)]), "nat")
    dnats = [line for line in nat if "-j DNAT" in line]
    assert len(dnats) == n
    assert "--probability" not in dnats[-1]  # the last rule always matches
    remaining, chances = 1.0, []
    for line in dnats:
        m = re.search(r"--probability (\S+)", line)
        p = float(m.group(1)) if m else 1.0
        chances.append(remaining * p)
        remaining *= 1 - p
    assert all(abs(c - 1 / n) < 1e-6 for c in chances)


FRESH = """\
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
COMMIT
"""

JUMP = '-A OUTPUT -m comment --comment "hm: services" -j HM-SERVICES'
INSERT = '-I OUTPUT 1 -m comment --comment "hm: services" -j HM-SERVICES'


def test_finalize_inserts_the_jump_first_when_absent() -> None:
    out = finalize(render_rules([WEB]), FRESH)
    assert table(out, "nat")[-1] == INSERT
    assert table(out, "filter")[-1] == INSERT
    assert "-D OUTPUT" not in out


def test_finalize_leaves_a_correct_jump_alone() -> None:
    chains = "".join(f":{service_chain(WEB, port)} - [0:0]\n" for port in WEB.ports)
    saved = FRESH.replace(":OUTPUT ACCEPT [0:0]\n", f":OUTPUT ACCEPT [0:0]\n{JUMP}\n")
    saved = saved.replace("*nat\n", f"*nat\n{chains}")
    out = finalize(render_rules([WEB]), saved)
    assert out == render_rules([WEB])


def test_finalize_moves_a_jump_that_is_not_first_and_drops_duplicates() -> None:
    other = "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"
    saved = FRESH.replace("*nat\n:OUTPUT ACCEPT [0:0]\n",
                          f"*nat\n:OUTPUT ACCEPT [0:0]\n{other}\n{JUMP}\n{JUMP}\n")
    nat = table(finalize(render_rules([WEB]), saved), "nat")
    assert nat[-3:] == ["-D" + JUMP[2:], "-D" + JUMP[2:], INSERT]


def test_finalize_deletes_chains_of_services_that_are_gone() -> None:
    stale = service_chain(WEB, WEB.ports[1])
    kept = service_chain(WEB, WEB.ports[0])
    chains = f":{stale} - [0:0]\n:{kept} - [0:0]\n"
    head = "*nat\n:OUTPUT ACCEPT [0:0]\n"
    saved = FRESH.replace(head, f"{head}{chains}{JUMP}\n")
    only_80 = svc("web", "10.96.0.10", WEB.endpoints, (80, 8080))
    nat = table(finalize(render_rules([only_80]), saved), "nat")
    assert nat[-2:] == [f"-F {stale}", f"-X {stale}"]
    assert f"-X {kept}" not in nat
