"""``python -m cosmonapse.cli``: the same as the ``cosmo`` console script."""

from . import main

main()
