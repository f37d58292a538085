"""Dynamic target sources: DNS records and watched files (see ``docs/discovery.md``).

The engine (:mod:`velithon._lb.discovery`) runs one actor per source and knows a
source only through the ``DiscoverySource`` protocol. This package supplies the
sources themselves and the parsing of the target strings that name them:

* ``specs.py``: which entries of a ``targets`` list are sources
  (``dns+srv://``, ``dns://``, their ``+https`` forms, ``file://``), the options they
  share, and the split into static URLs and sources;
* ``dns.py``: SRV and A/AAAA lookups with dnspython's async resolver on trio;
* ``files.py``: Prometheus ``file_sd`` JSON files, re-read when they change.
"""
