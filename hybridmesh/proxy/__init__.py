"""The userspace data plane shared by the sidecar and node placements."""
