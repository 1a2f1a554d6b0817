"""Resident memory of a server's process tree, from /proc (Linux only)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")


def _status_kb(pid: int, key: str) -> int | None:
    """A `VmRSS:`/`VmHWM:` style line of /proc/PID/status, in kB (None if gone)."""
    try:
        with open(_PROC / str(pid) / "status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
        return None
    return 0  # kernel threads / zombies have no Vm lines


def process_tree(root: int) -> list[int]:
    """`root` and all of its descendants that are still alive."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Field 4 (ppid) comes after the command name, which is in parentheses.
        try:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if (_PROC / str(pid)).exists():
            tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_rss_kb(pids: list[int]) -> int:
    return sum(_status_kb(pid, "VmRSS:") or 0 for pid in pids)


def tree_hwm_kb(root: int) -> int:
    """Sum of VmHWM (each process's own lifetime peak) over the live tree: an upper bound."""
    return sum(_status_kb(pid, "VmHWM:") or 0 for pid in process_tree(root))


@dataclass
class TreePeak:
    peak_kb: int = 0
    max_processes: int = 0
    samples: int = 0
    pids: list[int] = field(default_factory=list)


class MemorySampler:
    """Samples VmRSS summed over each watched process tree, in a background thread."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.2, rescan_s: float = 2.0):
        self._roots = roots
        self._interval = interval_s
        self._rescan = rescan_s
        self.peaks: dict[str, TreePeak] = {name: TreePeak() for name in roots}
        # Peak since the last reset_window(), per server: lets the caller attribute peaks to runs.
        self.window_kb: dict[str, int] = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def reset_window(self) -> None:
        for name in self.window_kb:
            self.window_kb[name] = 0

    def sample_now(self) -> None:
        """Take one sample at once (e.g. right before reading window_kb)."""
        for name, peak in self.peaks.items():
            self._record(name, peak)

    def _record(self, name: str, peak: TreePeak) -> None:
        rss = tree_rss_kb(peak.pids)
        peak.samples += 1
        peak.peak_kb = max(peak.peak_kb, rss)
        peak.max_processes = max(peak.max_processes, len(peak.pids))
        self.window_kb[name] = max(self.window_kb[name], rss)

    def _run(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_scan >= self._rescan:
                for name, root in self._roots.items():
                    self.peaks[name].pids = process_tree(root)
                last_scan = now
            for name, peak in self.peaks.items():
                self._record(name, peak)
            self._stop.wait(self._interval)
