"""The per-node agent: eBPF lifecycle, map sync, flow export, node proxy."""
