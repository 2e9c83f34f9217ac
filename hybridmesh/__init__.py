"""hybridmesh: a service mesh for Linux whose data-plane placement is a per-workload choice."""

__all__ = ["__version__"]
__version__ = "0.1.0"
