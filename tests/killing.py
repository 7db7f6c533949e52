"""Test helpers that kill real processes by pid while a run goes on (importable from every test
directory: pytest puts ``tests/`` on ``sys.path`` through its rootdir conftest)."""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from distgcl.checkpoint import CheckpointManager
from distgcl.train import STEP_DELAY_ENV


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def kill_rank_after_checkpoint(run_dir: Path, rank: int, step: int, timeout: float,
                               step_delay: float = 0.15) -> Iterator[dict[str, int]]:
    """While the body runs a training into ``run_dir``, SIGKILL rank ``rank``'s worker process
    (its ``workers/rank-R.pid``) once the step-``step`` checkpoint exists. Every step sleeps
    ``step_delay`` s (``DISTGCL_STEP_DELAY``) so the kill lands mid-run. Yields a dict that holds
    ``"pid"`` (the killed pid) once the kill happened."""
    pid_file = run_dir / "workers" / f"rank-{rank}.pid"
    killed: dict[str, int] = {}

    def killer() -> None:
        wait_for(lambda: step in CheckpointManager(run_dir).steps() and pid_file.exists(),
                 timeout, f"the step-{step} checkpoint")
        killed["pid"] = int(pid_file.read_text())
        os.kill(killed["pid"], signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    os.environ[STEP_DELAY_ENV] = str(step_delay)  # a window of several seconds to kill in
    try:
        yield killed
    finally:
        del os.environ[STEP_DELAY_ENV]
        thread.join(timeout=5)
    assert "pid" in killed, f"rank {rank} was never killed"
    assert int(pid_file.read_text()) != killed["pid"], f"rank {rank} never restarted"
