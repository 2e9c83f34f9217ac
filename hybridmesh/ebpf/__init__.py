"""Kernel programs (bpf/*.bpf.c) beside the Python that loads them through libbpf.

``build`` compiles them; ``_libbpf`` is the only caller of libbpf; ``maps`` gives typed,
BTF-checked map access; ``bpffs`` owns the pin directories; one module per program
(``sock_lb``: socket-level service load balancing on cgroup connect4/getpeername4).
"""
