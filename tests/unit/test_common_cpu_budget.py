"""The thread budget of a model runtime: the affinity set, capped by a cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.common.cpu_budget import cpu_budget

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, line: str) -> Path:
    (root / "cpu.max").write_text(line + "\n")
    return root


def _v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


def test_no_cgroup_files_means_the_affinity_set(tmp_path: Path) -> None:
    assert cpu_budget(tmp_path) == AFFINITY


def test_an_unlimited_v2_cgroup_means_the_affinity_set(tmp_path: Path) -> None:
    assert cpu_budget(_v2(tmp_path, "max 100000")) == AFFINITY


@pytest.mark.parametrize(("line", "cpus"), [("100000 100000", 1), ("50000 100000", 1), ("150000 100000", 2)])
def test_a_v2_quota_caps_the_budget_rounding_up(tmp_path: Path, line: str, cpus: int) -> None:
    assert cpu_budget(_v2(tmp_path, line)) == min(AFFINITY, cpus)


def test_a_v1_quota_caps_the_budget(tmp_path: Path) -> None:
    assert cpu_budget(_v1(tmp_path, 100_000, 100_000)) == 1


def test_a_v1_cgroup_without_a_quota_means_the_affinity_set(tmp_path: Path) -> None:
    assert cpu_budget(_v1(tmp_path, -1, 100_000)) == AFFINITY


def test_a_quota_above_the_affinity_set_leaves_the_affinity_set(tmp_path: Path) -> None:
    assert cpu_budget(_v2(tmp_path, f"{(AFFINITY + 8) * 100_000} 100000")) == AFFINITY


@pytest.mark.parametrize("line", ["garbage", "100000 0", ""])
def test_an_unreadable_quota_is_no_quota(tmp_path: Path, line: str) -> None:
    assert cpu_budget(_v2(tmp_path, line)) == AFFINITY


def test_a_narrowed_affinity_set_is_the_budget() -> None:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        assert cpu_budget() == 1
    finally:
        os.sched_setaffinity(0, before)
