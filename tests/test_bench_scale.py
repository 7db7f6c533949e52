"""``distgcl bench scale``: a real (tiny) sweep of the data phases, its outputs, the resume, the
slope fit. The train and shard-memory items start Ray Train / actors: bench/, not the suite."""
import json

import numpy as np
import pytest

from distgcl.benchmarks.scale import Sweep, run_sweep, slope_rows
from distgcl.cli import main
from distgcl.data.proteins import proteins_size


def test_data_sweep_writes_outputs_and_resumes(tmp_path, capsys) -> None:
    sweep = Sweep(scales=[1 / 100, 1 / 50], methods=[], workers=[], memory_shards=[],
                  work=tmp_path / "work", out=tmp_path / "out")
    assert sweep.items() == [("generate", "1/100"), ("load", "1/100"),
                             ("generate", "1/50"), ("load", "1/50")]
    paths = run_sweep(sweep, command="test")
    doc = json.loads(paths["json"].read_text())
    rows = {(r["phase"], r["scale"]): r for r in doc["rows"]
            if r["method"] == "data" and r["phase"] != "slope"}
    assert set(rows) == {(p, s) for p in ("generate", "load") for s in (0.01, 0.02)}
    load = rows[("load", 0.02)]
    assert load["first_load"] and load["nodes"] == proteins_size(1 / 50)[0]
    assert rows[("generate", 0.02)]["edges"] == load["edges"] == 2 * proteins_size(1 / 50)[1]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 50 for r in rows.values())
    slopes = {r["of_phase"]: r for r in doc["rows"] if r["phase"] == "slope"}
    assert set(slopes) == {"generate", "load"}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    assert "| phase |" in paths["report"].read_text().replace("phase | seconds", "phase |")
    # a second run finds every item done and runs nothing
    partial = (tmp_path / "work" / "scale_partial.jsonl").read_text().splitlines()
    assert len(partial) == 4
    capsys.readouterr()
    sweep.note = "Measured on a quiet machine."
    run_sweep(sweep, command="test")
    assert "4 of 4 items done before" in capsys.readouterr().out
    assert (tmp_path / "work" / "scale_partial.jsonl").read_text().splitlines() == partial
    assert json.loads(paths["json"].read_text())["notes"].endswith(" Measured on a quiet machine.")


def test_slopes_recover_the_power_law() -> None:
    rows = [{"method": "nml", "workers": 1, "phase": "train_epoch", "edges": e, "scale": e / 8,
             "seconds": 3e-6 * e ** 0.9, "peak_rss_mb": 100 + 0 * e}
            for e in (1e6, 4e6, 16e6)]
    (row,) = slope_rows(rows)
    assert row["time_slope"] == pytest.approx(0.9, abs=1e-3)
    assert row["memory_slope"] == pytest.approx(0.0, abs=1e-3)
    assert row["scales"] == [r["scale"] for r in rows]
    assert np.isfinite(row["time_slope"])


def test_bad_flags_are_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "scale", "--scales", "0,1"])
    assert "scales must be > 0" in capsys.readouterr().err
    assert main(["bench", "scale", "--methods", "nope", "--work", str(tmp_path)]) == 2
    assert "proteins_nope.yaml" in capsys.readouterr().err
