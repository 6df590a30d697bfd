"""What the benchmark reads from Linux: CPU time and RSS per process, per-core CPU, fd limits.

Why /proc and not psutil: it is not a dependency of the project, and the few
numbers we need are two fields of ``/proc/<pid>/stat`` (whole-process user +
system time, all threads included) and the per-core lines of ``/proc/stat``.
Both tick at ``SC_CLK_TCK`` (usually 100 Hz, 10 ms), which is fine for
measurement windows of seconds.
"""

import os
import resource
from dataclasses import dataclass

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise the soft open-file limit (every member socket is a descriptor); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a whole process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


@dataclass(frozen=True, slots=True)
class CoreTimes:
    busy_s: float  # running anything, this VM's kernel included
    steal_s: float  # wanted to run, but the hypervisor ran another guest
    total_s: float


def core_times(cores: tuple[int, ...]) -> dict[int, CoreTimes]:
    """Busy, stolen and total seconds of each core so far, from ``/proc/stat``."""
    result: dict[int, CoreTimes] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                continue
            core = int(name[3:])
            if core not in cores:
                continue
            # user nice system idle iowait irq softirq steal (guest times are inside user)
            v = [int(x) for x in rest.split()[:8]]
            total = sum(v)
            busy = total - v[3] - v[4] - v[7]
            result[core] = CoreTimes(busy * TICK_S, v[7] * TICK_S, total * TICK_S)
    return result


def process_rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS``); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
