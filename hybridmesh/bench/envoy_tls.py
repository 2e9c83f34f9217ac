"""mTLS for the injected Envoys, Istio's shape (pure: file paths and identities in, dicts out).

What Istio's sidecars get from istiod and we write into the bootstrap instead:

* outbound: each service cluster gets an ``UpstreamTlsContext``: the pod's SVID as client
  certificate, the mesh trust bundle, the destination's SPIFFE IDs (the service accounts of
  its endpoints) matched *exactly* on the server's URI SAN (secure naming), ALPN ``h2`` or
  ``http/1.1`` as the upstream speaks, Istio's SNI ``outbound_.<port>_._.<svc>.<ns>.svc...``;
* inbound: a ``tls_inspector`` listener filter and, per port, a chain for
  ``transport_protocol: tls`` with a ``DownstreamTlsContext`` that *requires* a client
  certificate from the trust domain; a plaintext (``raw_buffer``) chain beside it only when
  the mesh is PERMISSIVE, as Istio's PeerAuthentication does.

TLS 1.3 only on both sides, like hybridmesh's proxy, so a handshake costs the same protocol
work in both contenders; the keys are ECDSA P-256 in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TLS_INSPECTOR",
    "EnvoyTls",
    "downstream_transport",
    "spiffe_id",
    "tls_chains",
    "upstream_transport",
]

_T = "type.googleapis.com/envoy.extensions."
_UPSTREAM = _T + "transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM = _T + "transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": {"@type": _T + "filters.listener.tls_inspector.v3.TlsInspector"},
}


@dataclass(frozen=True, slots=True)
class EnvoyTls:
    """Where one pod's SVID, key and the trust bundle are (files its Envoy can read)."""

    cert_chain: str
    private_key: str
    trust_bundle: str
    trust_domain: str = "cluster.local"
    permissive: bool = True  # the mesh's mode: also accept plaintext inbound


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _common(tls: EnvoyTls, san: dict[str, str], alpn: Sequence[str]) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "tls_certificates": [
            {
                "certificate_chain": {"filename": tls.cert_chain},
                "private_key": {"filename": tls.private_key},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": tls.trust_bundle},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": san}],
        },
    }
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return common


def upstream_transport(
    tls: EnvoyTls, server_ids: Sequence[str], alpn: Sequence[str], sni: str
) -> dict[str, Any]:
    """The client side of a service cluster: present our SVID, accept only ``server_ids``."""
    if not server_ids:
        raise ValueError("an mTLS upstream needs the SPIFFE IDs it may accept")
    common = _common(tls, {"exact": server_ids[0]}, alpn)
    common["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "URI", "matcher": {"exact": sid}} for sid in sorted(set(server_ids))
    ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": _UPSTREAM, "common_tls_context": common, "sni": sni},
    }


def downstream_transport(tls: EnvoyTls) -> dict[str, Any]:
    """The server side: a client certificate is required and must be from the trust domain
    (which workload may call is authorization's business, not the handshake's)."""
    common = _common(tls, {"prefix": f"spiffe://{tls.trust_domain}/"}, ("h2", "http/1.1"))
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _DOWNSTREAM,
            "common_tls_context": common,
            "require_client_certificate": True,
        },
    }


def tls_chains(tls: EnvoyTls, plain_chain: dict[str, Any]) -> list[dict[str, Any]]:
    """One inbound port's chains: the mTLS one, and the plaintext one when PERMISSIVE."""
    match = dict(plain_chain["filter_chain_match"])
    secure = {
        **plain_chain,
        "name": plain_chain["name"] + "mtls",
        "filter_chain_match": {**match, "transport_protocol": "tls"},
        "transport_socket": downstream_transport(tls),
    }
    if not tls.permissive:
        return [secure]
    plain = {**plain_chain, "filter_chain_match": {**match, "transport_protocol": "raw_buffer"}}
    return [secure, plain]
