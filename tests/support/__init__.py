"""Helpers shared by the test suite: real servers, backends and raw clients on loopback."""
