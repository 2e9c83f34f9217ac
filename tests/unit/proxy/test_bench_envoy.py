"""The Envoy stand-in of ``_bench_loop --envoy``: its bootstrap and its CPU reading."""

from __future__ import annotations

import os
import resource

from hybridmesh.proxy._bench_envoy import envoy_bootstrap, proc_cpu_s


def test_bootstrap_routes_every_request_of_the_listener_to_the_backend() -> None:
    boot = envoy_bootstrap(("127.0.0.1", 18080), ("127.0.0.2", 9000))
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    (hcm,) = listener["filter_chains"][0]["filters"]
    config = hcm["typed_config"]
    assert "access_log" not in config
    (route,) = config["route_config"]["virtual_hosts"][0]["routes"]
    assert route["route"]["cluster"] == "backend"
    (cluster,) = boot["static_resources"]["clusters"]
    (ep,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert ep["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.2",
                                                           "port_value": 9000}
    assert "typed_extension_protocol_options" not in cluster  # HTTP/1.1 upstream
    assert "admin" not in boot


def test_proc_cpu_reads_the_same_clock_as_getrusage() -> None:
    sum(i * i for i in range(300_000))  # some user time to read
    user, system = proc_cpu_s(os.getpid())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert abs(user - ru.ru_utime) <= 2 * tick + 0.01
    assert abs(system - ru.ru_stime) <= 2 * tick + 0.01
    assert user > 0
