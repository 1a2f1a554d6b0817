"""CPU accounting from /proc, to tell whether other processes shared the machine during a run.

The servers, wrk and this harness all run on the same cores; anything else that used CPU
during a measured run (say a test suite) skews that run, so each run records how much.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from bench.memory import process_tree

_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (first line of /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10])  # already counted in user/nice
    return (sum(fields) - idle - guest) / _TICK


def tree_cpu_s(root: int) -> float:
    """utime + stime of `root` and its live descendants."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK


def pin_tree(root: int, cpus: set[int]) -> None:
    """Run every thread of `root` and its live descendants on `cpus` only (threads and
    processes they start later inherit it)."""
    for pid in process_tree(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), cpus)
            except (OSError, ValueError):
                continue  # the thread ended meanwhile


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(the server's CPU, the load generator's CPUs) out of those this process may use, or
    None when there is only one."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[0]}, set(allowed[1:])


def _own_and_children_s() -> float:
    """CPU used by this harness and its reaped children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass(frozen=True)
class CpuSnapshot:
    busy: float
    server: float
    harness: float


@dataclass(frozen=True)
class CpuUse:
    server_s: float
    harness_s: float  # wrk + this harness
    other_s: float  # everything else on the machine

    def share(self, seconds: float, value: float) -> float:
        """value as a percentage of all cores over `seconds`."""
        cores = os.cpu_count() or 1
        return 100.0 * value / (seconds * cores) if seconds > 0 else 0.0


def snapshot(server_pid: int) -> CpuSnapshot:
    return CpuSnapshot(machine_busy_s(), tree_cpu_s(server_pid), _own_and_children_s())


def since(start: CpuSnapshot, server_pid: int) -> CpuUse:
    end = snapshot(server_pid)
    server = max(0.0, end.server - start.server)
    harness = max(0.0, end.harness - start.harness)
    other = max(0.0, (end.busy - start.busy) - server - harness)
    return CpuUse(server, harness, other)


def busy_share(seconds: float = 1.0) -> float:
    """Percentage of all cores busy over the next `seconds` (before the run starts)."""
    start = machine_busy_s()
    time.sleep(seconds)
    return 100.0 * (machine_busy_s() - start) / (seconds * (os.cpu_count() or 1))
