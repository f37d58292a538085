"""The public load-balancing API, kept thin over the engine and the proxy."""
