"""Envoy bootstrap for a lab pod, shaped like an Istio sidecar's (pure: status in, dict out).

Listeners (both with the ``original_dst`` listener filter, so filter-chain matching sees the
address the app dialled, which iptables REDIRECT replaced):

* ``virtualOutbound`` 0.0.0.0:15001, ``use_original_dst``: one filter chain per service port
  of the pod's namespace, matched on (cluster IP, port); HTTP ports get the HTTP connection
  manager (L7: requests balanced over keep-alive pools to the endpoints), ``tcp`` ports
  ``tcp_proxy``. Anything else goes to ``PassthroughCluster`` (ORIGINAL_DST), as in Istio.
* ``virtualInbound`` 0.0.0.0:15006: one chain per port of the pod, forwarding to
  ``<pod IP>:<port>`` (not 127.0.0.1: apps may bind the pod IP only), L7 for HTTP ports;
  unknown ports pass through to the original destination.

Service clusters are STATIC with the ready endpoints from the lab status (an EDS snapshot
frozen at injection time: the bench topology does not change while it runs), balanced by
least-request, Istio's default. Circuit-breaker limits are lifted like Istio's. No stats
filters, no access log: this is Envoy at its leanest, a best case for the peer. With ``tls``
(the ``envoy-sidecar-mtls`` contender) the sidecars talk mTLS to each other, Istio's way
(envoy_tls.py); without it, plaintext.

When Envoy cannot run as uid 1337, ``mark`` sets SO_MARK on its upstream sockets so the
capture's ``--mark 0x539`` exclusion keeps its own connections from being captured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybridmesh.bench.envoy_tls import (
    TLS_INSPECTOR,
    EnvoyTls,
    spiffe_id,
    tls_chains,
    upstream_transport,
)

__all__ = [
    "ADMIN_PORT",
    "INBOUND_PORT",
    "OUTBOUND_PORT",
    "EnvoyPod",
    "EnvoyService",
    "pod_from_status",
    "render_bootstrap",
    "services_from_status",
]

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000  # on 127.0.0.1 only, as Istio's
_L7_PROTOCOLS = frozenset({"http", "http2", "grpc"})
_H2_PROTOCOLS = frozenset({"http2", "grpc"})  # upstreams that only speak HTTP/2 (grpcio)
_MAX = 4294967295
_SOL_SOCKET, _SO_MARK = 1, 36

_T = "type.googleapis.com/envoy.extensions."
_HCM = _T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
_TCP = _T + "filters.network.tcp_proxy.v3.TcpProxy"
_ROUTER = _T + "filters.http.router.v3.Router"
_ORIGINAL_DST = _T + "filters.listener.original_dst.v3.OriginalDst"
_HTTP_OPTIONS = _T + "upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True, slots=True)
class EnvoyService:
    """One port of a service, as Envoy's outbound side needs it."""

    name: str
    namespace: str
    cluster_ip: str
    port: int
    target_port: int
    l7: bool
    endpoints: tuple[str, ...]  # pod IPs
    h2: bool = False  # appProtocol http2/grpc: the upstream speaks HTTP/2 only
    accounts: tuple[str, ...] = ()  # service accounts of the endpoints (mTLS secure naming)

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def sni(self) -> str:
        """Istio's SNI for the service port (what an Istio server would route on)."""
        return f"outbound_.{self.port}_._.{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class EnvoyPod:
    namespace: str
    name: str
    ip: str
    inbound: tuple[tuple[int, bool], ...]  # (container port, L7?)
    h2_ports: tuple[int, ...] = ()  # container ports whose app speaks HTTP/2 only
    service_account: str = "default"


def services_from_status(status: Mapping[str, Any], namespace: str) -> list[EnvoyService]:
    """Every port of every service in ``namespace`` (Istio's Sidecar egress scoping)."""
    out = []
    for svc in status["services"]:
        if svc["namespace"] != namespace or not svc.get("clusterIP"):
            continue
        ips = tuple(sorted({ep["ip"] for ep in svc.get("endpoints", [])}))
        accounts = tuple(sorted({ep.get("serviceAccount") or "default"
                                 for ep in svc.get("endpoints", [])}))  # fmt: skip
        for port in svc["ports"]:
            out.append(
                EnvoyService(
                    name=svc["name"],
                    namespace=namespace,
                    cluster_ip=svc["clusterIP"],
                    port=int(port["port"]),
                    target_port=int(port["targetPort"]),
                    l7=(port.get("appProtocol") or "tcp") in _L7_PROTOCOLS,
                    endpoints=ips,
                    h2=port.get("appProtocol") in _H2_PROTOCOLS,
                    accounts=accounts,
                )
            )
    return sorted(out, key=lambda s: (s.name, s.port))


def pod_from_status(pod: Mapping[str, Any], status: Mapping[str, Any]) -> EnvoyPod:
    """The pod's ports, L7 where a service selecting it says the target port is HTTP."""
    mine = [
        port
        for svc in status["services"]
        if any(ep["ip"] == pod["ip"] for ep in svc.get("endpoints", []))
        for port in svc["ports"]
    ]
    l7_ports = {
        int(p["targetPort"]) for p in mine if (p.get("appProtocol") or "tcp") in _L7_PROTOCOLS
    }
    h2_ports = {int(p["targetPort"]) for p in mine if p.get("appProtocol") in _H2_PROTOCOLS}
    ports = sorted({int(p["containerPort"]) for p in pod.get("ports", [])})
    return EnvoyPod(
        namespace=pod["namespace"],
        name=pod["name"],
        ip=pod["ip"],
        inbound=tuple((p, p in l7_ports) for p in ports),
        h2_ports=tuple(sorted(h2_ports & set(ports))),
        service_account=pod.get("serviceAccount") or "default",
    )


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _hcm(stat_prefix: str, cluster: str, *, xfcc: bool = False) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
    config: dict[str, Any] = {
        "@type": _HCM,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": cluster,
            "virtual_hosts": [{"name": cluster, "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    if xfcc:  # as Istio's inbound: the app sees the verified peer, never a client-sent one
        config["forward_client_cert_details"] = "SANITIZE_SET"
        config["set_current_client_cert_details"] = {"uri": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _tcp(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": _TCP, "stat_prefix": stat_prefix, "cluster": cluster},
    }


def _filters(direction: str, l7: bool, cluster: str, *, xfcc: bool = False) -> list[dict[str, Any]]:
    if l7:
        return [_hcm(f"{direction}_http", cluster, xfcc=xfcc)]
    return [_tcp(f"{direction}_tcp", cluster)]


def _cluster(
    name: str,
    kind: str,
    mark: int | None,
    endpoints: Sequence[tuple[str, int]] = (),
    *,
    h2: bool = False,
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED" if kind == "ORIGINAL_DST" else "LEAST_REQUEST",
        "circuit_breakers": {
            "thresholds": [
                {"max_connections": _MAX, "max_pending_requests": _MAX, "max_requests": _MAX,
                 "max_retries": _MAX}
            ]
        },
    }  # fmt: skip
    if h2:  # as Istio does for grpc/http2 ports: HTTP/2 to the upstream, whatever came in
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if kind != "ORIGINAL_DST":
        lb = [{"endpoint": {"address": _address(ip, port)}} for ip, port in endpoints]
        cluster["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]}
    if mark is not None:
        option = {"level": _SOL_SOCKET, "name": _SO_MARK, "int_value": mark,
                  "state": "STATE_PREBIND"}  # fmt: skip
        cluster["upstream_bind_config"] = {
            "source_address": {"address": "0.0.0.0", "port_value": 0},  # a SocketAddress
            "socket_options": [option],
        }
    return cluster


def _outbound(services: Sequence[EnvoyService]) -> dict[str, Any]:
    chains = [
        {
            "name": svc.cluster,
            "filter_chain_match": {
                "prefix_ranges": [{"address_prefix": svc.cluster_ip, "prefix_len": 32}],
                "destination_port": svc.port,
            },
            "filters": _filters("outbound", svc.l7, svc.cluster),
        }
        for svc in services
        if svc.endpoints
    ]
    return {
        "name": "virtualOutbound",
        "address": _address("0.0.0.0", OUTBOUND_PORT),
        "use_original_dst": True,
        "listener_filters": [
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": {"@type": _ORIGINAL_DST},
            }
        ],
        "filter_chains": chains,
        "default_filter_chain": {
            "name": "PassthroughFilterChain",
            "filters": [_tcp("PassthroughCluster", "PassthroughCluster")],
        },
    }


def _inbound(pod: EnvoyPod, tls: EnvoyTls | None) -> dict[str, Any]:
    chains: list[dict[str, Any]] = []
    for port, l7 in pod.inbound:
        chain = {
            "name": f"inbound|{port}||",
            "filter_chain_match": {"destination_port": port},
            "filters": _filters("inbound", l7, f"inbound|{port}||", xfcc=tls is not None),
        }
        chains += [chain] if tls is None else tls_chains(tls, chain)
    inspect = [TLS_INSPECTOR] if tls is not None else []
    return {
        "name": "virtualInbound",
        "address": _address("0.0.0.0", INBOUND_PORT),
        "listener_filters": [
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": {"@type": _ORIGINAL_DST},
            },
            *inspect,
        ],
        "filter_chains": chains,
        "default_filter_chain": {
            "name": "InboundPassthroughFilterChain",
            "filters": [_tcp("InboundPassthroughCluster", "InboundPassthroughCluster")],
        },
    }


def _service_cluster(svc: EnvoyService, mark: int | None, tls: EnvoyTls | None) -> dict[str, Any]:
    endpoints = [(ip, svc.target_port) for ip in svc.endpoints]
    cluster = _cluster(svc.cluster, "STATIC", mark, endpoints, h2=svc.h2)
    if tls is not None:
        ids = [spiffe_id(tls.trust_domain, svc.namespace, sa) for sa in svc.accounts]
        alpn = ("h2",) if svc.h2 else ("http/1.1",) if svc.l7 else ()
        cluster["transport_socket"] = upstream_transport(tls, ids, alpn, svc.sni)
    return cluster


def render_bootstrap(
    pod: EnvoyPod,
    services: Sequence[EnvoyService],
    *,
    mark: int | None = None,
    tls: EnvoyTls | None = None,
) -> dict[str, Any]:
    """The whole bootstrap (write it as JSON; Envoy reads ``.json`` files natively);
    ``tls``: mTLS between the sidecars (this pod's SVID and the trust bundle)."""
    clusters = [_service_cluster(s, mark, tls) for s in services if s.endpoints]
    clusters += [
        _cluster(f"inbound|{port}||", "STATIC", mark, [(pod.ip, port)], h2=port in pod.h2_ports)
        for port, _ in pod.inbound
    ]
    clusters += [
        _cluster("PassthroughCluster", "ORIGINAL_DST", mark),
        _cluster("InboundPassthroughCluster", "ORIGINAL_DST", mark),
    ]
    return {
        "node": {
            "id": f"sidecar~{pod.ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc.cluster.local",
            "cluster": f"{pod.name}.{pod.namespace}",
        },
        "admin": {"address": _address("127.0.0.1", ADMIN_PORT)},
        "static_resources": {
            "listeners": [_outbound(services), _inbound(pod, tls)],
            "clusters": clusters,
        },
    }
