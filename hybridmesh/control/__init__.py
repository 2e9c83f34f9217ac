"""Control plane: desired state to versioned per-pod and per-node snapshots, served over a watch API."""
