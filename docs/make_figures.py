"""Figures of the docs: ``python docs/make_figures.py`` writes ``docs/img/pipeline.png`` (the
pipeline picture of README.md and docs/index.md) and copies the scaling plots of
``bench/results/`` into ``docs/img/`` (mkdocs serves only files inside ``docs/``). Rerun it
after ``distgcl bench scale`` rewrites its plots."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
# (file under bench/results/, name under docs/img/)
BENCH_PLOTS = (("scale_time.png", "scale_time.png"), ("scale_memory.png", "scale_memory.png"),
               ("sharded/scale_time.png", "sharded_scale_time.png"),
               ("sharded/scale_memory.png", "sharded_scale_memory.png"))

# (label, detail) per stage, left to right
STAGES = [
    ("graph", "PyG / OGB / file\n/ generated"),
    ("config + CLI", "distgcl train\nYAML + --set"),
    ("method", "GRACE | NML-GCL\n| E2Neg"),
    ("epoch loop", "1 process, or N Ray\nTrain workers (DDP)"),
    ("outputs", "embeddings.pt\nencoder.pt"),
    ("evaluation", "linear probe,\nk-means, ROC-AUC"),
]


def draw_pipeline(path: Path) -> None:
    """One row of boxes joined by arrows, plus the shard actors under the epoch loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 2.6), dpi=120)
    width, gap = 1.55, 0.35
    for i, (label, detail) in enumerate(STAGES):
        x = i * (width + gap)
        ax.add_patch(FancyBboxPatch((x, 0.9), width, 1.1, boxstyle="round,pad=0.04",
                                    fc="#e8f0fe", ec="#3b6ea5"))
        ax.text(x + width / 2, 1.72, label, ha="center", va="center", weight="bold", size=10)
        ax.text(x + width / 2, 1.25, detail, ha="center", va="center", size=8)
        if i:
            ax.annotate("", xy=(x - 0.03, 1.45), xytext=(x - gap + 0.03, 1.45),
                        arrowprops={"arrowstyle": "->", "color": "#3b6ea5"})
    loop_x = 3 * (width + gap)
    ax.add_patch(FancyBboxPatch((loop_x - 0.9, 0.05), width + 1.8, 0.5,
                                boxstyle="round,pad=0.04", fc="#fff4e0", ec="#b7791f"))
    ax.text(loop_x + width / 2, 0.3, "optional: graph-shard Ray actors (dist.shards = P)",
            ha="center", va="center", size=8)
    ax.annotate("", xy=(loop_x + width / 2, 0.88), xytext=(loop_x + width / 2, 0.58),
                arrowprops={"arrowstyle": "<->", "color": "#b7791f"})
    ax.set_xlim(-0.1, len(STAGES) * (width + gap) - gap + 0.1)
    ax.set_ylim(0, 2.1)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def copy_bench_plots(dest: Path) -> list[Path]:
    """Copy the scaling plots next to the pages that show them; missing ones are skipped."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name, target in BENCH_PLOTS:
        src = REPO / "bench" / "results" / name
        if src.is_file():
            copied.append(Path(shutil.copyfile(src, dest / target)))
    return copied


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    draw_pipeline(IMG / "pipeline.png")
    for path in [IMG / "pipeline.png", *copy_bench_plots(IMG)]:
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
