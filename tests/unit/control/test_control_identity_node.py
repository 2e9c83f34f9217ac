"""The CA's node hook: a node proxy's token signs only its own node's ``placement: node`` pods."""

from __future__ import annotations

import pytest
from cryptography import x509

from hybridmesh.agent.nodeproxy.credentials import node_request_token
from hybridmesh.control.identity import IdentityAuthority, IdentityError
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import make_csr, new_key
from hybridmesh.resources import load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: corp.example}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-2}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: amb, namespace: shop, labels: {app: amb}}
spec: {serviceAccount: amb, node: node-1, placement: node, command: ["srv"]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: far, namespace: shop, labels: {app: far}}
spec: {serviceAccount: far, node: node-2, placement: node, command: ["srv"]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: sc, namespace: shop, labels: {app: sc}}
spec: {serviceAccount: sc, node: node-1, placement: sidecar, command: ["srv"]}
"""


def authority() -> IdentityAuthority:
    control = ControlPlane(load_text(TOPO, "t.yaml"))
    return IdentityAuthority(MeshCA.create_root("corp.example"), control)


def sign(auth: IdentityAuthority, node_token: str, pod: str, sa: str) -> x509.Certificate:
    identity = SpiffeId.for_workload("corp.example", "shop", sa)
    signed = auth.sign(node_request_token(node_token, f"shop/{pod}"),
                       make_csr(new_key(), identity))
    return x509.load_pem_x509_certificate(signed.chain_pem)


def test_a_node_token_gets_the_svid_of_a_node_pod_on_its_own_node() -> None:
    auth = authority()
    cert = sign(auth, auth.issue_node_token("node-1"), "amb-0", "amb")
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(u.value) for u in uris] == ["spiffe://corp.example/ns/shop/sa/amb"]
    assert auth.issued == 1


@pytest.mark.parametrize(("pod", "sa", "status", "code"), [
    ("far-0", "far", 403, "pod-on-other-node"),  # another node's pod: never
    ("sc-0", "sc", 403, "not-node-placement"),  # a sidecar's identity is its own proxy's
    ("gone-0", "gone", 403, "pod-gone"),
])
def test_a_node_token_is_refused_for_pods_it_does_not_host(pod: str, sa: str, status: int,
                                                           code: str) -> None:
    auth = authority()
    with pytest.raises(IdentityError) as err:
        sign(auth, auth.issue_node_token("node-1"), pod, sa)
    assert (err.value.status, err.value.code) == (status, code)
    assert auth.refused == 1


def test_a_node_token_from_another_authority_is_401() -> None:
    auth, other = authority(), authority()
    with pytest.raises(IdentityError) as err:
        sign(auth, other.issue_node_token("node-1"), "amb-0", "amb")
    assert (err.value.status, err.value.code) == (401, "invalid-token")
