"""Mesh CA, SPIFFE SVIDs, CSRs, rotation and peer-identity validation.

- `spiffe`: strict SPIFFE ID parsing; equality is exact string equality, never a pattern.
- `ca`: `MeshCA` (self-signed root or intermediate under a user root) signs CSRs for the
  identity the control plane decided; `bootstrap` tokens prove a pod's service account.
- `workload`: key, CSR, `Svid` (with `cryptography`), renewal schedule and
  `validate_peer_certificate` (full chain check): the CA side, tools and tests.
- `keygen`: the proxy's key + CSR, made in a short-lived child process (`python -m
  hybridmesh.identity.keygen`), so `cryptography` never loads in a long-lived proxy worker.
- `svid`: `PemSvid`/`TrustRoots`, the proxy's SVID held as PEM, read by `_der` (a minimal DER
  reader); `_leaf` holds the X509-SVID leaf rules both validators share.
- `tls`: TLS 1.3 mTLS contexts for proxy-to-proxy traffic and the post-handshake
  `check_peer` secure-naming check (no `cryptography`: OpenSSL verified the chain).
- `bundle`: `TrustBundle`, the roots of one trust domain.
"""
