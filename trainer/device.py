"""Where training and inference run: the device, and how many CPU threads torch may use."""

from __future__ import annotations

import os
from pathlib import Path

import torch

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 quota.

    torch sizes its pool from the host's physical cores, which oversubscribes a container
    limited to fewer CPUs (every matmul then waits on descheduled threads).
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, int(quota) // int(period)))


def pick_device() -> torch.device:
    """CUDA when present, else the CPU with one torch thread per usable CPU (never more than torch's default)."""
    torch.set_num_threads(min(torch.get_num_threads(), usable_cpus()))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
