"""``python -m velithon`` is the ``velithon`` command."""

import sys

from ._cli import main

sys.exit(main())
