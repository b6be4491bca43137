"""What this process's cgroups allow it: the files of the cgroups it is in, from its own up
to the root of each hierarchy mounted at /sys/fs/cgroup (cgroup v2's single one, and a
cgroup v1 controller's), and the memory they limit it to.

A container sees its host's memory and cores: `docker run --memory=8g` or a Kubernetes limit
says only in these files how much of them it may use.
"""

import os
from typing import List, Optional

CGROUP_ROOT = "/sys/fs/cgroup"
OWN_CGROUPS = "/proc/self/cgroup"
# cgroup v1 writes a page-rounded 2**63 - 1 for "no memory limit".
_V1_NO_MEMORY_LIMIT = 2 ** 60


def read_text(path: str) -> str:
    """A small system file's text; "" where it cannot be read."""
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def own_cgroup_directories(root: str, own_cgroups: str, v1_controller: str) -> List[str]:
    """The directories of the process's cgroup and of each cgroup above it that exist under
    `root` (in the cgroup v1 hierarchy of `v1_controller`, where there is one, and the v2 one),
    innermost first, then the two hierarchies' roots. A path that is not under the mount (a
    container that sees its host's names) leaves only the roots."""
    v1_root = os.path.join(root, v1_controller)
    directories = []
    for line in read_text(own_cgroups).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base = root  # cgroup v2's single hierarchy: "0::/path".
        elif v1_controller in controllers.split(","):
            base = v1_root
        else:
            continue
        relative = path.strip("/")
        while relative:
            directory = os.path.join(base, relative)
            if os.path.isdir(directory):
                directories.append(directory)
            relative = os.path.dirname(relative)
    return directories + [v1_root, root]


def memory_limit(root: str = CGROUP_ROOT, own_cgroups: str = OWN_CGROUPS) -> Optional[int]:
    """The bytes of memory this process's cgroups allow it, or None when unlimited or unknown:
    the smallest limit from its own cgroup up (v2's `memory.max`, "max" for none; v1's
    `memory.limit_in_bytes`)."""
    limits = []
    for directory in own_cgroup_directories(root, own_cgroups, "memory"):
        text = (read_text(os.path.join(directory, "memory.max"))
                or read_text(os.path.join(directory, "memory.limit_in_bytes"))).strip()
        if text.isdigit() and 0 < int(text) < _V1_NO_MEMORY_LIMIT:
            limits.append(int(text))
    return min(limits) if limits else None
