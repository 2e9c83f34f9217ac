"""The lab topology the benchmark runs on: one namespace per contender, all in one lab.

Every contender gets the same four pods in its own namespace ``bench-<contender>``::

    http-0           node-1   httpsvc, 1 KiB responses           Service http:80 -> 8080
    tcp-0            node-1   tcpperf server (echo + sink)       Service tcp:5001, 5002 (tcp)
    client-same-0    node-1   idle; the bench runs load tools in it  (same-node variant)
    client-cross-0   node-2   idle; likewise                          (cross-node variant)

Scenarios that need more add their pods only when they run (``render_topology``'s
``scenarios``): ``grpc`` a grpcio echo server ``grpc-0`` (Service grpc:50051, appProtocol
grpc); ``blast-radius``/``upgrade`` two 1-replica HTTP services ``blast-a``/``blast-b``
(node-1) that both clients call; ``scale`` a ``scale`` workload of N replicas on node-1
(Service scale:80), re-applied with each N while the lab runs.

Keeping every contender up at once is what makes alternation cheap: switching from A to B is
choosing another client pod, not rebuilding a lab, and idle pods cost no CPU. The lab knows
nothing of Envoy: the ``envoy-sidecar`` (and ``envoy-sidecar-mtls``) namespace runs with
placement ``none`` and the bench injects Envoy into its pods afterwards, as Istio's injector
would have. A contender without identity (``sidecar-plaintext``) gets the annotation
``hybridmesh.io/identity: disabled`` on every Workload, as a mesh user would write it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridmesh.bench.scenarios import Contender

__all__ = [
    "BLAST_SERVICES",
    "GRPC_PORT",
    "HTTP_PORT",
    "HTTP_SERVICE_PORT",
    "RR_PORT",
    "SCALE_SERVICE",
    "SERVER_NODE",
    "STREAM_PORT",
    "TRUST_DOMAIN",
    "PodRole",
    "client_pod",
    "namespace_of",
    "render_topology",
    "scale_overlay",
    "server_pod",
]

HTTP_PORT = 8080
HTTP_SERVICE_PORT = 80
RR_PORT = 5001
STREAM_PORT = 5002
GRPC_PORT = 50051
SERVER_NODE = "node-1"
TRUST_DOMAIN = "cluster.local"  # the MeshConfig's below
BLAST_SERVICES = ("blast-a", "blast-b")
SCALE_SERVICE = "scale"
CLIENT_NODES = {"same-node": "node-1", "cross-node": "node-2"}


@dataclass(frozen=True, slots=True)
class PodRole:
    """Where a bench pod is: its lab namespace and name."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def namespace_of(contender: str) -> str:
    """``bench-<contender>``, made a DNS label (``sidecar+ebpf`` -> ``bench-sidecar-ebpf``)."""
    return "bench-" + "".join(ch if ch.isalnum() else "-" for ch in contender.lower())


def client_pod(contender: str, variant: str) -> PodRole:
    """The pod the load tools run in for ``variant`` (same-node / cross-node)."""
    if variant not in CLIENT_NODES:
        raise ValueError(f"unknown variant {variant!r}")
    return PodRole(namespace_of(contender), f"client-{variant.split('-', maxsplit=1)[0]}-0")


def server_pod(contender: str, scenario: str) -> PodRole:
    """The pod that serves ``scenario``'s requests (the single-path scenarios)."""
    name = "grpc-0" if scenario == "grpc" else "tcp-0" if scenario.startswith("tcp") else "http-0"
    return PodRole(namespace_of(contender), name)


_HEADER = """\
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local, mtls: {mode: PERMISSIVE}, defaultPlacement: none}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-2}
"""

_NAMESPACE = """\
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: http, namespace: {ns}, labels: {{app: http}}{meta}}}
spec:
  serviceAccount: http
  node: {server_node}
  placement: {placement}
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{{port}}",
            "--response-size", "1024"]
  ports: [{{name: http, containerPort: {http}}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: tcp, namespace: {ns}, labels: {{app: tcp}}{meta}}}
spec:
  serviceAccount: tcp
  node: {server_node}
  placement: {placement}
  command: ["python3", "-m", "hybridmesh.bench.tcpperf", "serve", "--rr-port", "{rr}",
            "--stream-port", "{stream}"]
  ports: [{{name: rr, containerPort: {rr}}}, {{name: stream, containerPort: {stream}}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: client-same, namespace: {ns}, labels: {{app: client-same}}{meta}}}
spec:
  serviceAccount: client
  node: {same_node}
  placement: {placement}
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: client-cross, namespace: {ns}, labels: {{app: client-cross}}{meta}}}
spec:
  serviceAccount: client
  node: {cross_node}
  placement: {placement}
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: http, namespace: {ns}}}
spec:
  selector: {{app: http}}
  ports: [{{name: http, port: {http_svc}, targetPort: {http}, appProtocol: http}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: tcp, namespace: {ns}}}
spec:
  selector: {{app: tcp}}
  ports: [{{name: rr, port: {rr}, targetPort: {rr}, appProtocol: tcp}},
          {{name: stream, port: {stream}, targetPort: {stream}, appProtocol: tcp}}]
"""


_GRPC = """\
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: grpc, namespace: {ns}, labels: {{app: grpc}}{meta}}}
spec:
  serviceAccount: grpc
  node: {server_node}
  placement: {placement}
  command: ["python3", "-m", "hybridmesh.lab.workloads.grpcsvc", "serve", "--port", "{port}"]
  ports: [{{name: grpc, containerPort: {port}}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: grpc, namespace: {ns}}}
spec:
  selector: {{app: grpc}}
  ports: [{{name: grpc, port: {port}, targetPort: {port}, appProtocol: grpc}}]
"""

_HTTP_SERVICE = """\
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}{meta}}}
spec:
  serviceAccount: {name}
  replicas: {replicas}
  node: {server_node}
  placement: {placement}
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{{port}}",
            "--response-size", "1024"]
  ports: [{{name: http, containerPort: {http}}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {http_svc}, targetPort: {http}, appProtocol: http}}]
"""


_NO_IDENTITY = ", annotations: {hybridmesh.io/identity: disabled}"


def _meta(contender: Contender) -> str:
    """What a Workload's metadata flow mapping gets after its labels."""
    return "" if contender.identity else _NO_IDENTITY


def _http_service(contender: Contender, name: str, replicas: int) -> str:
    return _HTTP_SERVICE.format(
        meta=_meta(contender),
        name=name,
        ns=namespace_of(contender.name),
        replicas=replicas,
        server_node=SERVER_NODE,
        placement=contender.placement,
        http=HTTP_PORT,
        http_svc=HTTP_SERVICE_PORT,
    )


def _extras(contender: Contender, scenarios: Sequence[str]) -> list[str]:
    parts = []
    if "grpc" in scenarios:
        parts.append(
            _GRPC.format(
                meta=_meta(contender),
                ns=namespace_of(contender.name),
                server_node=SERVER_NODE,
                placement=contender.placement,
                port=GRPC_PORT,
            )
        )
    if "blast-radius" in scenarios or "upgrade" in scenarios:
        parts += [_http_service(contender, name, 1) for name in BLAST_SERVICES]
    return parts


def scale_overlay(contenders: Sequence[Contender], pods: int) -> str:
    """What ``lab apply`` gets for the scale scenario's level: the ``scale`` workload of
    every contender with ``pods`` replicas (the lab replaces a changed workload's pods)."""
    if pods < 1:
        raise ValueError(f"scale needs at least one pod, got {pods}")
    return "".join(_http_service(c, SCALE_SERVICE, pods) for c in contenders).removeprefix("---\n")


def render_topology(contenders: Sequence[Contender], scenarios: Sequence[str] = ()) -> str:
    """The multi-document YAML for ``hybridmesh lab up``: the four base pods of every
    contender, and the extra pods ``scenarios`` need."""
    parts = [_HEADER]
    for contender in contenders:
        parts.append(
            _NAMESPACE.format(
                meta=_meta(contender),
                ns=namespace_of(contender.name),
                placement=contender.placement,
                server_node=SERVER_NODE,
                same_node=CLIENT_NODES["same-node"],
                cross_node=CLIENT_NODES["cross-node"],
                http=HTTP_PORT,
                http_svc=HTTP_SERVICE_PORT,
                rr=RR_PORT,
                stream=STREAM_PORT,
            )
        )
        parts += _extras(contender, scenarios)
    return "".join(parts)
