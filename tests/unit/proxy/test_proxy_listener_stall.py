"""Protocol detection on a stalled event loop: a client that spoke in time is not opaque TCP.

libuv (uvloop) runs due timers *before* it polls for I/O. When an I/O callback holds the loop
longer than the detection window (a loaded machine, a long callback) and the client's request
arrives meanwhile, the next iteration fires the window's timer first, while the request already
sits in the socket. Found by the bench's proxy-share check: under load, plaintext HTTP through a
proxy was relayed as opaque TCP and never counted as requests.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import uvloop
from proxy_harness import get, read_response, running_proxy, start_backends, web_service


def test_request_queued_behind_a_stall_is_still_http(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 detect_timeout_s=0.02) as h:
            loop = asyncio.get_running_loop()
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", h.port))
            await asyncio.sleep(0.005)  # accepted: the detection window is running
            poke, stall = socket.socketpair()
            stalled = loop.create_future()

            def stuck_io_callback() -> None:  # an I/O callback, so the poll phase is over
                loop.remove_reader(stall.fileno())
                client.send(get("/stalled"))  # arrives after this iteration's poll...
                time.sleep(0.1)  # ...and the loop is stuck 5x the window
                stalled.set_result(None)

            loop.add_reader(stall.fileno(), stuck_io_callback)
            poke.send(b"x")
            await asyncio.wait_for(stalled, 5)
            reader, writer = await asyncio.open_connection(sock=client)
            resp = await asyncio.wait_for(read_response(reader), 5)
            assert resp.startswith(b"HTTP/1.1 200 ")
            writer.close()
            poke.close()
            stall.close()
            assert [r.path for r in backends[0].seen] == ["/stalled"]
            assert h.metric("request_total", response_code="200", reporter="source",
                            destination_workload="web") == 1
        await backends[0].stop()

    uvloop.run(main())
