"""``python -m sysgate.runtime``: the same as the ``sysgate-runc`` console script."""
import sys

from .wrapper import main

sys.exit(main())
