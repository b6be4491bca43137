"""Tests for zscgan_tf.cpu_cores: the cores a process may use, in a container limited by CPU set or quota."""

import pytest

from zscgan_tf import cpu_cores

from conftest import pinned_to_one_cpu, write_cgroup_tree


@pytest.mark.parametrize("files, cpus", [
    ({"cpu.max": "200000 100000\n"}, 2),
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs' time: 2 threads.
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None)])
def test_a_containers_cpu_quota_is_read_from_cgroup_v2_or_v1(tmp_path, files, cpus):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    # A process in the container's own root cgroup, as /proc/self/cgroup says in a container.
    (tmp_path / "self_cgroup").write_text("0::/\n")
    assert cpu_cores.cgroup_cpu_quota(str(tmp_path), str(tmp_path / "self_cgroup")) == cpus
    assert cpu_cores.cgroup_cpu_quota(str(tmp_path), str(tmp_path / "missing")) == cpus


@pytest.mark.parametrize("own_cgroup, files, cpus", [
    # A systemd scope with a quota, inside a slice without one (cgroup v2).
    ("0::/system.slice/job.scope", {"system.slice/cpu.max": "max 100000",
                                    "system.slice/job.scope/cpu.max": "200000 100000"}, 2),
    # The tighter of a cgroup's quota and its parent's.
    ("0::/a/b", {"a/cpu.max": "100000 100000", "a/b/cpu.max": "400000 100000"}, 1),
    # cgroup v1's cpu hierarchy, as /proc/self/cgroup names it beside the others.
    ("4:cpu,cpuacct:/batch/job\n3:memory:/batch/job", {"cpu/batch/job/cpu.cfs_quota_us": "300000",
                                                      "cpu/batch/job/cpu.cfs_period_us": "100000"}, 3),
    # A container that sees its host's cgroup names: the path is not under the mount, whose root is its own.
    ("0::/docker/abc", {"cpu.max": "200000 100000"}, 2),
])
def test_a_quota_on_a_cgroup_nested_below_the_mount_counts(tmp_path, own_cgroup, files, cpus):
    assert cpu_cores.cgroup_cpu_quota(*write_cgroup_tree(tmp_path, own_cgroup, files)) == cpus


def test_usable_cores_keep_to_the_cpu_set_and_the_quota(monkeypatch):
    monkeypatch.setattr(cpu_cores.os, "sched_getaffinity", lambda pid: set(range(64)))  # A large machine.
    monkeypatch.setattr(cpu_cores, "cgroup_cpu_quota", lambda: None)
    assert cpu_cores.usable_cores() == 64
    monkeypatch.setattr(cpu_cores, "cgroup_cpu_quota", lambda: 2)  # A container given 2 CPUs' time.
    assert cpu_cores.usable_cores() == 2
    monkeypatch.setattr(cpu_cores.os, "sched_getaffinity", lambda pid: {3})  # `taskset -c 3`.
    assert cpu_cores.usable_cores() == 1


def test_usable_cores_here_follow_this_processs_cpu_set():
    # Unpatched, on this machine: a thread pinned to one of its CPUs (as `taskset -c 3` pins a process) may use
    # one core.
    with pinned_to_one_cpu():
        assert cpu_cores.usable_cores() == 1
