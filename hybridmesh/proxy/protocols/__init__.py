"""Sans-IO protocol cores (detection, HTTP/1, HTTP/2, TLS glue): bytes in, events out, no sockets."""
