"""Tests for zscgan_tf.cgroups: the memory a container's cgroups allow."""

import pytest

from zscgan_tf import cgroups, memory_checks

from conftest import write_cgroup_tree


@pytest.mark.parametrize("own_cgroup, files, limit", [
    ("0::/", {"memory.max": "8589934592"}, 8589934592),  # docker run --memory=8g, cgroup v2.
    ("0::/", {"memory.max": "max"}, None),
    # A systemd scope's limit inside a slice's larger one; the tighter counts.
    ("0::/a/b", {"a/memory.max": "4000000000", "a/b/memory.max": "6000000000"}, 4000000000),
    # cgroup v1's memory hierarchy, as /proc/self/cgroup names it beside the others; its "no limit".
    ("5:memory:/job\n4:cpu,cpuacct:/job", {"memory/job/memory.limit_in_bytes": "2147483648"}, 2147483648),
    ("5:memory:/job", {"memory/job/memory.limit_in_bytes": "9223372036854771712"}, None),
    ("0::/", {}, None)])
def test_a_containers_memory_limit_is_read_from_cgroup_v2_or_v1(tmp_path, own_cgroup, files, limit):
    assert cgroups.memory_limit(*write_cgroup_tree(tmp_path, own_cgroup, files)) == limit


def test_the_memory_check_takes_a_containers_limit_below_the_machines(monkeypatch):
    # It compared with the host's memory: 256 GB where the container may use 8.
    monkeypatch.setattr(memory_checks.os, "sysconf", lambda name: 256 * 2 ** 30 // 4096 if name == "SC_PHYS_PAGES"
                        else 4096)
    monkeypatch.setattr(cgroups, "memory_limit", lambda: 8 * 10 ** 9)
    assert memory_checks._physical_memory_bytes() == 8 * 10 ** 9
    with pytest.raises(memory_checks.UserError, match=r"\(12 GB, 2 copies while they are made\), more than this "
                                                 r"machine's 8 GB$"):
        memory_checks.check_samples_fit_in_memory("calibration_samples", 10 ** 4, 10 ** 4, (224, 224, 3), copies=2)
    monkeypatch.setattr(cgroups, "memory_limit", lambda: None)
    assert memory_checks._physical_memory_bytes() == 256 * 2 ** 30
