"""``python -m recon``: see :mod:`recon.app`."""

from .app import cli

cli()
