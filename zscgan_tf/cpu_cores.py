"""How many CPU cores this process may use: its CPU set, within its cgroups' CPU quotas.

A container sees every core of its host's CPU set, and a container given 2 CPUs' time
(`docker run --cpus=2`, a Kubernetes limit) still sees them all; threads beyond its quota
only wait their turn.
"""

import math
import os
from typing import Optional

from zscgan_tf import cgroups


def usable_cores() -> int:
    """The cores of this process's CPU set (all of them where there is none), at most its
    cgroups' CPU quota (`cgroup_cpu_quota`)."""
    try:
        cores = len(os.sched_getaffinity(0))  # A container's CPU set, not the host's cores.
    except AttributeError:  # Not on Linux.
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def cgroup_cpu_quota(root: str = cgroups.CGROUP_ROOT, own_cgroups: str = cgroups.OWN_CGROUPS) -> Optional[int]:
    """The CPUs' worth of time this process's cgroups may use (rounded up), or None when
    unlimited or unknown: the smallest limit from the process's own cgroup (`own_cgroups`
    names it) up to the root of the hierarchy mounted at `root`. In a container that root is
    usually the container's own cgroup; a limit set on a cgroup nested below it (a systemd
    scope, say) counts too.

    Reads cgroup v2's `cpu.max` ("200000 100000": 2 CPUs; "max 100000": no limit), else
    cgroup v1's `cpu/cpu.cfs_quota_us` and `cpu/cpu.cfs_period_us` (a quota of -1: no limit).
    """
    quotas = [quota for directory in cgroups.own_cgroup_directories(root, own_cgroups, "cpu")
              for quota in [_cpu_quota_in(directory)] if quota is not None]
    return min(quotas) if quotas else None


def _cpu_quota_in(directory: str) -> Optional[int]:
    """The CPUs' worth of time one cgroup directory allows (v2's `cpu.max`, else v1's CFS
    files); None for no limit or none found."""
    words = cgroups.read_text(os.path.join(directory, "cpu.max")).split()
    if words:
        quota, period = words[0], words[1] if len(words) > 1 else ""
    else:
        quota = cgroups.read_text(os.path.join(directory, "cpu.cfs_quota_us")).strip()
        period = cgroups.read_text(os.path.join(directory, "cpu.cfs_period_us")).strip()
    try:
        return max(1, math.ceil(int(quota) / int(period))) if int(quota) > 0 else None
    except (ValueError, ZeroDivisionError):  # "max", or nothing read.
        return None
