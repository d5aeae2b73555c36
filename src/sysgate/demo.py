"""The main job's demo (``./dev run``). Filled in as features land."""
from __future__ import annotations

import sys


def main() -> int:
    print("sysgate demo: nothing to supervise yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
