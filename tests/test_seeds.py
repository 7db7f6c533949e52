"""``distgcl train --seeds``: one normal run per training seed, the spread over training seeds in
seeds.json and on the console, skip-on-rerun, a failing seed keeping the finished ones, bad input."""
import contextlib
import io
import json
import re
import statistics
from pathlib import Path

import pytest

from distgcl.cli import main
from distgcl.seeds import SeedRuns, finished_result

REPO = Path(__file__).resolve().parents[1]
# GRACE on a 200-node CSBM graph (random split per probe seed), 2 epochs: ~5 s per seed
TINY = ["data.csbm.num_nodes=200", "data.csbm.num_features=8", "model.out_dim=8",
        "model.proj_dim=8", "train.epochs=2", "train.progress=false", "eval.probe_seeds=2",
        "eval.probe_c_grid=[1.0]", "eval.clustering_runs=1"]


def _seeds(out: Path, seeds: str) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``distgcl train quickstart --seeds SEEDS``."""
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(out), "--seeds", seeds]
    for item in TINY:
        args += ["--set", item]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("seeds")
    code, stdout, _ = _seeds(out, "0,1")
    assert code == 0
    return out, stdout


def test_each_seed_is_a_normal_run_and_std_is_over_training_seeds(
        two_seeds: tuple[Path, str]) -> None:
    out, _ = two_seeds
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["metric"] == "accuracy" and summary["finished"] == [0, 1]
    scores = []
    for seed in (0, 1):
        result = json.loads((out / f"seed-{seed}/result.json").read_text())
        assert result["seed"] == seed and result["config"]["train"]["seed"] == seed
        per_seed = summary["per_seed"][str(seed)]
        assert per_seed["score"] == result["metrics"]["accuracy_mean"]
        assert per_seed["probe_std"] == result["metrics"]["accuracy_std"]
        scores.append(per_seed["score"])
    assert scores[0] != scores[1]  # different training seeds, different embeddings
    assert summary["mean"] == pytest.approx(statistics.fmean(scores))
    assert summary["std"] == pytest.approx(statistics.stdev(scores))
    assert summary["probe"]["seeds"] == 2 and summary["probe"]["probe"] == "lbfgs"


def test_console_line_names_the_training_seeds(two_seeds: tuple[Path, str]) -> None:
    out, stdout = two_seeds
    summary = json.loads((out / "seeds.json").read_text())
    line = (f"accuracy {summary['mean']:.2f} ± {summary['std']:.2f} over 2 training seeds "
            f"(each: mean of 2 probe seeds)")
    assert line in stdout.splitlines()
    assert re.search(r"seed 1 \(2/2\): training in .*seed-1", stdout)


def test_rerun_skips_finished_seeds_and_a_failing_seed_keeps_them(
        two_seeds: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = two_seeds
    before = {s: (out / f"seed-{s}/result.json").stat().st_mtime_ns for s in (0, 1)}
    monkeypatch.setenv("DISTGCL_NAN_AT", "0:1")  # every run that trains diverges at step 1
    code, stdout, stderr = _seeds(out, "0,1,2")
    assert code == 1
    for seed in (0, 1):
        assert f"seed {seed} ({seed + 1}/3): skipped:" in stdout
        assert (out / f"seed-{seed}/result.json").stat().st_mtime_ns == before[seed]
    assert len(stderr.strip().splitlines()) == 1 and "training seed 2" in stderr
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["finished"] == [0, 1] and summary["seeds"] == [0, 1, 2]
    assert "diverged" in summary["failed"]["2"] and summary["std"] is not None
    assert "over 2 training seeds" in stdout and "failed: seed 2" in stdout


def test_a_result_with_another_config_is_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps({"config": {"train": {"epochs": 2}}}))
    assert finished_result(tmp_path, {"train": {"epochs": 2}})[0] is not None
    result, why = finished_result(tmp_path, {"train": {"epochs": 3}})
    assert result is None and "another config" in why


def test_seeds_json_is_written_as_each_seed_finishes(tmp_path: Path) -> None:
    runs = SeedRuns(tmp_path, [3, 5])
    runs.add(3, {"method": "grace", "dataset": "csbm", "metrics": {
        "accuracy_mean": 80.0, "accuracy_std": 0.0, "accuracy_per_seed": [80.0, 80.0],
        "probe": {"seeds": 2, "split": "public", "seconds": 1.0}}})
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["finished"] == [3] and summary["std"] is None
    assert "seconds" not in summary["probe"]  # the probe's setting, not its timing
    assert runs.line() == ("accuracy 80.00 over 1 training seed (each: mean of 2 probe seeds): "
                           "no spread")


@pytest.mark.parametrize("seeds, says", [("1", "at least two"), ("-2", ">= 0"),
                                         ("0,1,1", "seed 1 is given twice"),
                                         ("0,x", "comma-separated")])
def test_bad_seeds_is_one_line_and_exit_2(tmp_path: Path, seeds: str, says: str) -> None:
    code, stdout, stderr = _seeds(tmp_path / "bad", seeds)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and says in stderr
    assert not (tmp_path / "bad").exists()  # nothing trained
