"""``distgcl.data.cache``: two real processes race :func:`build_once` on one cache folder.

The first process writes its item in two halves with a pause in between; the second calls
``build_once`` while the first is in that pause. Under the lock the second waits, finds the
finished item and never processes it again (one build, counted in a side file) nor reads the half
file. Without the lock (``cache_lock`` a no-op context) the second drops the first one's partial
file and builds again: two builds, which this test catches.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HALF = 1000
CHILD = r"""
import json, sys, time
from pathlib import Path
from distgcl.data.cache import build_once

folder, role = Path(sys.argv[1]), sys.argv[2]
item, count, halfway = folder / "item.txt", folder.parent / "builds.txt", folder.parent / "halfway"

def build():
    # what PyG's dataset constructors do: load the item if it is there, else process it
    if item.is_file():
        return item.read_text()
    with open(count, "a") as fh:
        fh.write(role + "\n")
    with open(item, "w") as fh:
        fh.write("a" * HALF)
        fh.flush()
        halfway.touch()
        time.sleep(1.5)  # the other process calls build_once now
        fh.write("b" * HALF)
    return item.read_text()

if role == "second":
    end = time.monotonic() + 60
    while not halfway.exists():
        if time.monotonic() > end:
            sys.exit("the first process never got halfway")
        time.sleep(0.01)
print(json.dumps({"role": role, "text": build_once(folder, item, build)}))
""".replace("HALF", str(HALF))


def _start(folder: Path, role: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), role],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_build_once_and_never_read_a_half_written_item(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "dataset"
    folder.mkdir(parents=True)
    first = _start(folder, "first")
    second = _start(folder, "second")
    outputs = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    whole = "a" * HALF + "b" * HALF
    assert (tmp_path / "cache" / "builds.txt").read_text().split() == ["first"]  # one build
    assert [o["text"] for o in outputs] == [whole, whole]  # nobody saw the half file
    assert (folder / "item.txt").read_text() == whole
    assert (folder / ".complete").is_file()


def test_a_stale_partial_item_without_marker_is_rebuilt(tmp_path: Path) -> None:
    """A build killed mid-write leaves no marker: the next ``build_once`` drops the partial file
    first, so a loader that trusts an existing file cannot take it for a finished one."""
    from distgcl.data.cache import MARKER, build_once

    folder = tmp_path / "dataset"
    folder.mkdir()
    item = folder / "item.txt"
    item.write_text("a" * HALF)  # half written, no marker
    calls = []

    def build() -> str:
        if not item.is_file():
            calls.append(time.monotonic())
            item.write_text("whole")
        return item.read_text()

    assert build_once(folder, item, build) == "whole" and len(calls) == 1
    assert (folder / MARKER).is_file()
    assert build_once(folder, item, build) == "whole" and len(calls) == 1  # loaded, not redone
