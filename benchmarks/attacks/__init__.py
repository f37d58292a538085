"""Attacks on a running velithon gateway, kept as a repeatable tool.

``python -m benchmarks.attacks --duration 60`` starts three loopback backends (one
built on the standard library's ``http.server``, two from ``velithon.testing``) and a
gateway served by ``velithon run`` in a subprocess, sends steady, hash-verified traffic
through it, and runs seven bounded scenarios one after another: stalled uploads,
slowloris, a connection flood, thousands of idle keep-alive connections, a backend
killed under load, out-of-phase health flapping, and a soak. It ends with a markdown
table and exit code 0 only when every gate holds (see ``report.py`` for the gates).

The modules, one concept each:

* ``payloads``: the deterministic bodies and the upload receipt both sides agree on;
* ``stdlib_backend``, ``trio_backends``, ``gateway_app``: the programs under test;
* ``processes``, ``fleet``: owning those subprocesses; ``usage``: measuring the gateway's;
* ``client``: the well-behaved client that verifies every body;
* ``rawnet``, ``slow_clients``, ``connections``, ``backend_faults``: the attacks and faults;
* ``scenarios``: the time plan and the scenario loop; ``warmup``: the priming bursts
  that bring the gateway to its memory high-water mark before the baseline;
  ``report``: gates and table;
* ``__main__``: one run from start to end, and the command line.
"""
