"""The load-balancing engine: pure cores and the actors around them; no HTTP, no ASGI."""
