#!/usr/bin/env python3
"""Generate src/sysgate/data/systemd-groups.json: systemd's ``SystemCallFilter=`` groups.

Runs ``systemd-analyze syscall-filter`` and records every ``@group`` exactly as
systemd prints it: its description and its members in systemd's order, nested
``@groups`` kept as references (sysgate expands them, as systemd does). The trailing
"Ungrouped System Calls" comment block is not a group and is skipped.
tests/test_systemd.py compares the shipped table with the local systemd-analyze.
Run:  python3 tools/gen_systemd_groups.py
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "sysgate" / "data" / "systemd-groups.json"


def parse(text: str) -> dict[str, dict]:
    """``systemd-analyze syscall-filter`` output -> {"@name": {"description", "members"}}."""
    groups: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if re.fullmatch(r"@[a-z0-9-]+", line):
            current = groups[line] = {"description": "", "members": []}
        elif not line.strip() or not line.startswith(" "):
            current = None                  # blank line or a top-level "# ..." comment block
        elif current is not None:
            item = line.strip()
            if item.startswith("#"):
                current["description"] = item.lstrip("# ").strip()
            else:
                current["members"].append(item)
    return groups


def main() -> None:
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                         text=True, check=True).stdout
    data = {"generator": "tools/gen_systemd_groups.py (systemd-analyze syscall-filter)",
            "systemd_version": version, "groups": parse(out)}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{OUT}: {len(data['groups'])} groups from systemd {version}")


if __name__ == "__main__":
    main()
