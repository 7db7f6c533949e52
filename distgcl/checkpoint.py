"""Checkpoint manager with torchtitan's semantics: ``save(step)`` / ``load() -> state | None``.

On-disk format (the same for single-process runs and Ray Train runs, where Ray copies the
directory into ``{storage_path}/{run_name}/step-<N>``)::

    step-<N>/state.pt         torch.save of the whole training state
    step-<N>/manifest.json    {"step", "sha256", "bytes", "format"} of state.pt
    step-<N>/.complete        written last: a step counts only once its marker exists

(Ray Train runs name them ``step-<N>-<session>``: Ray tracks checkpoints by path, so a step
written again after a resume must not reuse the path of the one it replaces.)

Writes go through temporary files with names no other process uses (pid + random suffix), then an
atomic rename, so a crash mid-save never yields a torn checkpoint. :meth:`CheckpointManager.load`
verifies the newest complete step against its checksum; a truncated or corrupted one is skipped
with one line on stderr and the previous one is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

MARKER = ".complete"
STATE = "state.pt"
MANIFEST = "manifest.json"
FORMAT = 2


def unique_tmp(path: Path) -> Path:
    """A temporary sibling of ``path`` that no other process or rank uses."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a uniquely named temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_step_dir(target: Path, step: int, state: dict[str, Any]) -> Path:
    """Write one checkpoint directory (state, manifest with checksum, then the marker)."""
    target.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, target / STATE)
    manifest = {"step": int(step), "sha256": sha256_file(target / STATE),
                "bytes": (target / STATE).stat().st_size, "format": FORMAT}
    atomic_write_text(target / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(target / MARKER, str(step))
    return target


class CorruptCheckpoint(RuntimeError):
    """A checkpoint directory whose state does not match its manifest or cannot be read."""


def read_step_dir(folder: Path) -> dict[str, Any]:
    """Load and verify one checkpoint directory; :class:`CorruptCheckpoint` if it is damaged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"unreadable manifest ({exc.__class__.__name__})") from None
    state_path = folder / STATE
    if not state_path.is_file():
        raise CorruptCheckpoint("state.pt is missing")
    size = state_path.stat().st_size
    if size != manifest.get("bytes"):
        raise CorruptCheckpoint(f"state.pt has {size} bytes, the manifest says "
                                f"{manifest.get('bytes')} (truncated?)")
    if sha256_file(state_path) != manifest.get("sha256"):
        raise CorruptCheckpoint("state.pt does not match its checksum")
    try:
        return torch.load(state_path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a checksum-valid file that torch cannot read is still unusable
        raise CorruptCheckpoint(f"torch.load failed ({str(exc).splitlines()[0]})") from None


def _say(message: str) -> None:
    print(f"distgcl: {message}", file=sys.stderr, flush=True)


class CheckpointManager:
    """Args:
        folder (str or Path): where the ``step-N`` directories live.
        keep_latest_k (int, optional): complete checkpoints to keep (default: :obj:`2`).
        log (callable, optional): receives the one-line messages (default: stderr).
    """

    def __init__(self, folder: str | Path, keep_latest_k: int = 2,
                 log: Callable[[str], None] = _say) -> None:
        if keep_latest_k < 2:
            raise ValueError("keep_latest_k must be >= 2: the newest checkpoint may be mid-write "
                             "or damaged")
        self.folder = Path(folder)
        self.keep_latest_k = keep_latest_k
        self.log = log

    def entries(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (marker present) as ``(step, folder)``, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for d in self.folder.glob("step-*"):
            if not (d / MARKER).is_file():
                continue
            try:
                step = int(d.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            out.append((step, (d / MARKER).stat().st_mtime, d))
        return [(step, d) for step, _, d in sorted(out)]

    def steps(self) -> list[int]:
        """Complete checkpoint steps, ascending."""
        return [step for step, _ in self.entries()]

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step}"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` as checkpoint ``step`` and purge old ones."""
        target = write_step_dir(self.path(step), step, state)
        self.purge()
        return target

    def purge(self) -> None:
        for _, old in self.entries()[:-self.keep_latest_k]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, step: int = -1) -> dict[str, Any] | None:
        """The state of checkpoint ``step``, or (``step=-1``) of the newest complete checkpoint
        that passes its checksum; a damaged newer one is reported in one line and skipped.
        None when there is no usable checkpoint."""
        entries = self.entries()
        if step != -1:
            found = [d for s, d in entries if s == step]
            if not found:
                raise FileNotFoundError(f"no complete checkpoint step-{step} in {self.folder}")
            return read_step_dir(found[-1])
        found = self.newest_valid()
        return found[1] if found is not None else None

    def newest_valid(self) -> tuple[str, dict[str, Any]] | None:
        """``(folder name, state)`` of the newest complete checkpoint that passes its checksum
        (a damaged newer one is reported in one line and skipped), or None."""
        skipped: list[str] = []
        for _, candidate in reversed(self.entries()):
            try:
                state = read_step_dir(candidate)
            except CorruptCheckpoint as exc:
                skipped.append(f"{candidate.name} ({exc})")
                continue
            if skipped:
                self.log(f"checkpoint {', '.join(skipped)} in {self.folder} is damaged; "
                         f"resuming from {candidate.name}")
            return candidate.name, state
        if skipped:
            self.log(f"every checkpoint in {self.folder} is damaged ({', '.join(skipped)}); "
                     "starting from scratch")
        return None

    def load_named(self, name: str) -> dict[str, Any]:
        """The verified state of checkpoint folder ``name`` (:class:`CorruptCheckpoint` if it is
        missing or damaged)."""
        folder = self.folder / name
        if not (folder / MARKER).is_file():
            raise CorruptCheckpoint(f"{name} is not a complete checkpoint in {self.folder}")
        return read_step_dir(folder)
