"""``python -m cosmonapse``: the same as the ``cosmo`` console script."""

from .cli import main

main()
