"""``python -m recon``: see :mod:`recon.app`."""

import sys

from .app import main

sys.exit(main())
