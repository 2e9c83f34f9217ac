"""hybridmesh: a service mesh for Linux whose data-plane placement is a per-workload choice."""

from hybridmesh import native as _native

__all__ = ["__version__"]
__version__ = "0.1.0"

_native.install()  # before any proxy module is imported: see hybridmesh/native
