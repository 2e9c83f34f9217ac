"""Mesh CA, SPIFFE SVIDs, CSRs, rotation and peer-identity validation."""
