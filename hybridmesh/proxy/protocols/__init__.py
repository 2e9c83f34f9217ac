"""Sans-IO protocol cores (detection, HTTP/1, HTTP/2, TLS glue): bytes in, events out.

No sockets in here: the proxy's I/O shell feeds bytes and acts on the returned events.
"""
