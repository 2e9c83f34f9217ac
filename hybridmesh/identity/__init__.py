"""Mesh CA, SPIFFE SVIDs, CSRs, rotation and peer-identity validation.

- `spiffe`: strict SPIFFE ID parsing; equality is exact string equality, never a pattern.
- `ca`: `MeshCA` (self-signed root or intermediate under a user root) signs CSRs for the
  identity the control plane decided; `bootstrap` tokens prove a pod's service account.
- `workload`: the proxy's key, CSR, `Svid`, renewal schedule and `validate_peer_certificate`.
- `tls`: TLS 1.3 mTLS contexts for proxy-to-proxy traffic and the post-handshake
  `check_peer` secure-naming check.
- `bundle`: `TrustBundle`, the roots of one trust domain.
"""
