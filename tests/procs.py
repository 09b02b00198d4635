"""The CLI in child processes: `learnstream` commands run to their end, and pipeline roles (`up --roles R,R`) that
fault tests can kill -9 and benches can hold to one core and pause while they produce."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

from learnstream.config import Settings
from learnstream.secret import reveal

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30
CLI_TIMEOUT_S = 120


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes the CLI load exactly these settings (it reads every LEARNSTREAM_<FIELD>)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for field in dataclasses.fields(settings):
        value = reveal(getattr(settings, field.name))
        if value is not None:
            env[f"LEARNSTREAM_{field.name.upper()}"] = str(int(value) if isinstance(value, bool) else value)
    return env


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """`learnstream ARGS` with these settings, to its end; raises CalledProcessError when it fails."""
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO, env=settings_env(settings),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=True)


class RoleProcess:
    """One `learnstream up --roles ...` process; its output goes to a log file beside the test's data."""

    def __init__(self, settings: Settings, roles: str, *, log_path: Path, cpus: set[int] | None = None) -> None:
        """cpus: the cores the process may run on (None: any)."""
        self.settings = settings
        self.roles = roles
        self.log_path = log_path
        self.cpus = cpus
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "up", "--roles", self.roles],
                cwd=REPO, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
            )
        if self.cpus is not None:
            # At once, while it is still importing: the threads it starts later inherit the affinity.
            os.sched_setaffinity(self.process.pid, self.cpus)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no offset commit, no goodbye to the consumer group."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: frozen where it is (its group keeps it while the pause is shorter than the session timeout)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it does not end in time."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
