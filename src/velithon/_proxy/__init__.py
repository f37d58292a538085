"""Forwarding one request upstream: headers, paths, uploads, the pool, WebSockets."""
