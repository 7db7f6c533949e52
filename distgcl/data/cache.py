"""Disk caches that concurrent processes (ranks on one node, nodes sharing a file system) can
fill at once: a :class:`filelock.FileLock` beside the cached item serialises the writers, and
a completion marker written last (atomically) tells a reader the item is whole.

A process killed mid-write leaves no marker, so the next one drops the partial files and
redoes them; a reader never takes a half-written file for a finished one.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, TypeVar

from filelock import FileLock

from distgcl.checkpoint import atomic_write_text

T = TypeVar("T")
MARKER = ".complete"


def cache_lock(path: Path) -> FileLock:
    """The lock of the cached file or folder ``path`` (a ``.lock`` sibling; its parent is
    created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")))


def build_once(folder: Path, partial: Path, build: Callable[[], T], stamp: str = "done\n") -> T:
    """``build()`` under ``folder``'s lock; ``partial`` (what ``build`` writes in place, e.g.
    PyG's ``processed`` folder) is removed first unless ``folder``'s marker says a previous
    build finished with the same ``stamp``. The marker is written (atomically) only after
    ``build`` returns."""
    marker = folder / MARKER
    with cache_lock(folder):
        if not marker.is_file() or marker.read_text() != stamp:
            if partial.is_dir():
                shutil.rmtree(partial)
            else:
                partial.unlink(missing_ok=True)
        out = build()
        atomic_write_text(marker, stamp)
        return out
