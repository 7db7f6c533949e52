"""Checkpoint manager with torchtitan's semantics: ``save(step)`` / ``load() -> bool``.

Each save writes ``step-<N>/state.pt`` through a temporary file, then a ``.complete`` marker; a
step counts only once its marker exists, so a crash mid-save never yields a torn checkpoint.
The newest ``keep_latest_k`` (>= 2, as the newest may be mid-write) complete steps are kept.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

MARKER = ".complete"


class CheckpointManager:
    """Args:
        folder (str or Path): where the ``step-N`` directories live.
        keep_latest_k (int, optional): complete checkpoints to keep (default: :obj:`2`).
    """

    def __init__(self, folder: str | Path, keep_latest_k: int = 2) -> None:
        if keep_latest_k < 2:
            raise ValueError("keep_latest_k must be >= 2: the newest checkpoint may be mid-write")
        self.folder = Path(folder)
        self.keep_latest_k = keep_latest_k

    def steps(self) -> list[int]:
        """Complete checkpoint steps, ascending."""
        if not self.folder.is_dir():
            return []
        out = []
        for d in self.folder.glob("step-*"):
            if (d / MARKER).is_file():
                try:
                    out.append(int(d.name.split("-", 1)[1]))
                except ValueError:
                    continue
        return sorted(out)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` as checkpoint ``step`` and purge old ones."""
        target = self.folder / f"step-{step}"
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, target / "state.pt")
        (target / MARKER).write_text(str(step))
        for old in self.steps()[:-self.keep_latest_k]:
            shutil.rmtree(self.folder / f"step-{old}", ignore_errors=True)
        return target

    def load(self, step: int = -1) -> dict[str, Any] | None:
        """The state of checkpoint ``step`` (-1: newest complete one), or None if there is none."""
        steps = self.steps()
        if not steps:
            return None
        if step == -1:
            step = steps[-1]
        if step not in steps:
            raise FileNotFoundError(f"no complete checkpoint step-{step} in {self.folder}")
        return torch.load(self.folder / f"step-{step}" / "state.pt", weights_only=False)
