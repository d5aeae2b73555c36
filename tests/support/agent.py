"""``sysgate agent`` in a subprocess, for the agent, learning and runtime-wrapper tests."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

CONNECTION_TIMEOUT = 3.0   # the agent's --timeout: how long a runtime may take to send its state


class AgentProcess:
    """``sysgate agent`` in a subprocess; its log goes to a file the tests read."""

    def __init__(self, directory, config: dict | None = None):
        self.socket = str(directory / "agent.sock")
        self.log_path = directory / "agent.log"
        argv = [sys.executable, "-m", "sysgate", "agent", "--socket", self.socket,
                "--timeout", str(CONNECTION_TIMEOUT)]
        if config is not None:
            (directory / "agent.json").write_text(json.dumps(config))
            argv += ["--config", str(directory / "agent.json")]
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.wait_log(r"ready on ")

    def text(self) -> str:
        return self.log_path.read_text()

    def mark(self) -> int:
        """The log's current length: pass it as ``since`` to ignore older lines."""
        return len(self.text())

    def wait_log(self, pattern: str, timeout: float = 10, since: int = 0) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text()[since:])
            if match:
                return match
            assert self.proc.poll() is None, f"agent exited ({self.proc.returncode}):\n{self.text()}"
            if time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} in the agent log:\n{self.text()}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self.log.close()
        return code
