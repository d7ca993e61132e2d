import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.proc_cpu import parse_cpus, pin_tree, tree_cpu_s

# A parent that starts a child, and a thread in each, all sleeping until killed. The child
# spins a while first: an interpreter's start alone can stay under one clock tick of CPU
# (seen: 0.0 s), and the test reads the child's CPU as a sign that it was counted.
_CHILD = (
    "import threading, time; sum(range(3 * 10**6)); threading.Thread(target=time.sleep, args=(60,)).start();"
    " print('up', flush=True); time.sleep(60)"
)
_TREE = f"""
import subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c", {_CHILD!r}], stdout=subprocess.PIPE)
child.stdout.readline()
threading.Thread(target=time.sleep, args=(60,)).start()
print(child.pid, flush=True)
time.sleep(60)
"""


def test_cpu_lists_read_as_taskset_writes_them() -> None:
    assert parse_cpus("0") == {0}
    assert parse_cpus("0-3") == {0, 1, 2, 3}
    assert parse_cpus("0, 2-3,7") == {0, 2, 3, 7}
    with pytest.raises(ValueError):
        parse_cpus("a")


def _affinities(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(t.name))) for t in Path(f"/proc/{pid}/task").iterdir()}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one of them")
def test_pinning_reaches_every_thread_of_the_process_and_its_children() -> None:
    cpu = min(os.sched_getaffinity(0))
    parent = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert len(list(Path(f"/proc/{child}/task").iterdir())) >= 2
        pin_tree(parent.pid, {cpu})
        assert _affinities(parent.pid) == _affinities(child) == {frozenset({cpu})}
        # The child first: it spins, so the tree (read after, child included) is never less.
        child_s = tree_cpu_s(child)
        assert tree_cpu_s(parent.pid) >= child_s > 0
    finally:
        os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
