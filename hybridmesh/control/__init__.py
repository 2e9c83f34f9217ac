"""Control plane: desired state to versioned per-pod and per-node snapshots, and their watch API."""
