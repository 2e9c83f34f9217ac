"""Side-by-side benchmark of placements.

``hybridmesh bench`` brings up one lab holding every contender (``none``, each placement the
lab realizes — ``sidecar``, ``sidecar+ebpf``, ``kernel``, ``node`` — and Envoy injected the
Istio way as ``envoy-sidecar``) in namespaces of their own, measures each scenario with the
contenders alternating, and writes results.json, results.csv, report.md, report.html and
plots.

Pure parts (tested without privileges): ``scenarios`` (what can be run; the contender table),
``schedule`` (the alternating run order), ``stats`` (median, min–max, ratios to none),
``summary`` and ``headlines`` (the figures people quote), ``blast`` (failures and recovery
from per-request records), ``loadcheck`` (is the load generator the bottleneck),
``render``/``html`` (CSV, markdown, HTML), ``envoy_config`` (Envoy's bootstrap), ``tools``
(load tool command lines and parsers), ``topology`` (the lab YAML), ``model`` (the results
document).

The rest touches the machine: ``bed`` (lab up/down/apply, Envoy injection, tools in pods),
``measure`` (one run), ``accounting`` (cgroup CPU, peak RSS, eBPF run time), ``calibrate``
(loadgen vs h2load), ``scale`` and ``disrupt`` (the executors of scale, blast-radius and
upgrade), ``runner`` (the whole bench), ``report`` and ``plots``. ``tcpperf`` is the L4
workload the TCP scenarios run in the pods, ``flowprobe`` the recording open-loop client of
the disruption and scale scenarios.
"""
