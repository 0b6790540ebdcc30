"""How many intra-op threads torch uses: the CPUs this process may use, its share, the free cores.

torch's intra-op threads split every operation and wait for each other at its end, so one thread
on a core that another process keeps busy stalls the whole operation: measured here, `corrupt` on
the CIFAR subset took 15.0 s with 2 threads while one other process ran and 1.5 s with 1. The
default therefore counts only the cores that are free now, within this process's share.
"""

from __future__ import annotations

import os
import time

import torch

ENV = "ROBUSTCOMPRESS_THREADS"
SAMPLE_S = 0.1  # how long the load of the allowed CPUs is sampled (/proc/stat)
BUSY = 0.5  # a core busier than this with other work is counted as taken


def parse_threads(value: object) -> int:
    """A thread count given by a user: a whole number >= 1, else ValueError naming what was given."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"the number of threads must be a whole number of at least 1, got {value!r}")
    return n


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: taskset, cgroups cpusets, SLURM)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def local_share(cpus: int) -> int:
    """This process's share of `cpus`: all of them, or 1/LOCAL_WORLD_SIZE under torchrun."""
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, procs))


def busy_cores(cpus: list[int], seconds: float = SAMPLE_S) -> int:
    """How many of `cpus` other processes keep busy: per-CPU busy time over a short /proc/stat sample."""
    first = _cpu_times()
    if not first:
        return 0
    time.sleep(seconds)
    second = _cpu_times()
    taken = 0
    for cpu in cpus:
        if cpu not in first or cpu not in second:
            continue
        (busy0, total0), (busy1, total1) = first[cpu], second[cpu]
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) > BUSY:
            taken += 1
    return taken


def _cpu_times() -> dict[int, tuple[int, int]]:
    """cpu -> (busy jiffies, total jiffies) from /proc/stat; empty where it does not exist."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def default_threads() -> int:
    """The free cores of this process's share of its allowed CPUs (at least 1)."""
    cpus = allowed_cpus()
    share = local_share(len(cpus))
    free = len(cpus) - busy_cores(cpus)
    return max(1, min(share, free))


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    `n`, else $ROBUSTCOMPRESS_THREADS, else $OMP_NUM_THREADS when set (torch already follows it),
    else `default_threads()`. A bad value raises ValueError with a message for the user.
    """
    if n is None and os.environ.get(ENV, "").strip():
        n = parse_threads(os.environ[ENV])
    if n is None and os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    n = default_threads() if n is None else parse_threads(n)
    torch.set_num_threads(n)
    return n
