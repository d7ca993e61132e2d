"""Another commit's code beside this one: a temporary git worktree and a service run from it.

Benches that compare against an earlier main (``--baseline REV``) start that commit's service
from the worktree with this checkout's interpreter and dependencies, so both sides run in the
same rounds on the same machine.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def revision_tree(revision: str, folder: Path) -> Iterator[Path]:
    """A detached worktree of ``revision`` under ``folder``, removed afterwards."""
    tree = folder / f"baseline-{revision}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False)


def module_argv(tree: Path, module: str) -> list[str]:
    """argv that runs ``python -m module`` with ``tree``'s packages first on the path."""
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
        f"runpy.run_module({module!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", code]
