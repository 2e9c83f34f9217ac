"""Kernel programs (bpf/*.bpf.c) beside the Python that loads them through libbpf."""
