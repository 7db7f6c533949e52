"""``distgcl bench scale``: a real (tiny) sweep of the data phases, its outputs, the resume, the
slope fit. The train and shard-memory items start Ray Train / actors: bench/, not the suite."""
import json
import sys
import time

import numpy as np
import pytest

from distgcl.benchmarks.scale import (Sweep, local_estimate_rows, rows_from_records, run_measured,
                                      run_sweep, slope_rows, train_command)
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


# ------------------------------------------------------------------ backends, guard, rows (no Ray)

def test_backends_items_skip_what_does_not_fit_and_local_refuses_big_scales(tmp_path,
                                                                          capsys) -> None:
    sweep = Sweep(scales=[1 / 16, 2.0], methods=["nml"], workers=[2], memory_shards=[4],
                  backends=["local", "sharded"], work=tmp_path, out=tmp_path)
    sweep.check()  # both: the local backend just skips scale 2
    assert sweep.items() == [("generate", "1/16"), ("load", "1/16"),
                             ("train", "1/16", "nml", "2", "local"),
                             ("train", "1/16", "nml", "2", "sharded"),
                             ("generate", "2"), ("train", "2", "nml", "2", "sharded"),
                             ("shard_memory", "1/16", "4")]
    with pytest.raises(ValueError, match="the local backend refuses scale 2"):
        train_command(sweep, "2", "nml", 2, "local")
    local, _ = train_command(sweep, "1/16", "nml", 2, "local")
    sharded, run_dir = train_command(sweep, "1/16", "nml", 2, "sharded")
    assert not any(a.startswith("dist.shards=") for a in local)
    assert sharded[sharded.index("dist.shards=4") - 1] == "--set"
    assert run_dir.name == "nml-s1_16-w2-sharded"
    # --report-only: should the refusal break, the sweep still runs nothing (no scale-4 graph)
    safe = ["--methods", "nml", "--work", str(tmp_path), "--out", str(tmp_path), "--report-only"]
    assert main(["bench", "scale", "--backend", "local", "--scales", "1,2,4", *safe]) == 2
    err = capsys.readouterr().err
    assert "--backend local refuses scale(s) 2, 4" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "scale", "--backend", "sharded", "--shards", "0", *safe]) == 2
    assert "--shards must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "scale", "--backend", "remote"])
    assert "invalid choice: 'remote'" in capsys.readouterr().err


def test_memory_guard_kills_the_whole_tree(tmp_path) -> None:
    import subprocess

    import psutil

    from distgcl.benchmarks.scale import _kill_tree

    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="memory guard: MemAvailable"):
        # a guard above any machine's memory: it trips as soon as the tree runs
        run_measured([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "g.log",
                     10.0, min_available_mb=float(2**40))
    assert time.perf_counter() - start < 5
    # the kill reaches a grandchild in its own session (as Ray's processes may be)
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(60)'], start_new_session=True); "
              "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(pid_file)],
                            start_new_session=True)
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.perf_counter() - start < 30
        time.sleep(0.05)
    child = psutil.Process(int(pid_file.read_text()))
    _kill_tree(psutil.Process(proc.pid), proc)
    assert proc.returncode is not None
    with pytest.raises(psutil.NoSuchProcess):  # reaped by init: gone, or a zombie awaiting it
        child.wait(timeout=5)
        child.status()


def test_every_process_peak_by_role(tmp_path) -> None:
    # Ray's process titles: ``ray::<ActorClass>.<method>``; ``exec -a`` sets argv[0] the same way
    hold = "import time; a = bytearray({mb} * 2**20); a[::4096] = b'x' * len(a[::4096]); " \
           "time.sleep(3)"
    script = (f"(exec -a ray::GraphShardServer.sample {sys.executable} -c "
              f"\"{hold.format(mb=120)}\") & "
              f"(exec -a ray::RayTrainWorker.run {sys.executable} -c \"{hold.format(mb=60)}\") & "
              "wait")
    m = run_measured(["bash", "-c", script], tmp_path / "p.log", 60.0)
    each = m["processes"]
    assert each["shard_actor"][0] >= 120 and each["train_worker"][0] >= 60
    assert each["train_worker"][0] < 120
    assert len(each["driver"]) == 1 and each["driver"][0] < 60
    assert 0 <= m["load_before"] and 0 <= m["load_after"]


def _train_record(scale: str, backend: str, worker_mb: float, sampled_worker_mb: float,
                  edges: int) -> list[dict]:
    body = {"phase": "train", "wall_seconds": 30.0, "tree_peak_rss_mb": 3 * worker_mb,
            "processes": {"driver": [400.0], "train_worker": [sampled_worker_mb, 700.0],
                          "shard_actor": [900.0, 800.0], "ray": [90.0, 60.0]},
            "load_before": 0.2, "load_after": 2.1, "store_calls": [12.0, 12.0],
            "result": {"timing": {"seconds_per_epoch": 5.0, "eval_seconds": 3.0,
                                  "prepare_seconds": 1.0},
                       "memory": {"workers_peak_rss_mb": [worker_mb, 650.0],
                                  "driver_peak_rss_mb": 420.0},
                       "metrics": {"rocauc_mean": 70.0, "probe_seconds": 1.0},
                       "world_size": 2, "layers": 2, "epochs_run": 1,
                       "graph": {"backend": backend, "worker_loaded_dataset": False}}}
    return [{"key": ["generate", scale], "record": {"phase": "generate", "seconds": 1.0,
                                                    "peak_rss_mb": 100.0, "nodes": 10,
                                                    "edges": edges}},
            {"key": ["train", scale, "nml", "2", backend], "record": body}]


def test_rows_carry_backend_processes_calls_and_the_worker_rss_slope() -> None:
    records = []
    for scale, edges in (("1/16", 5_000_000), ("1/4", 20_000_000), ("1", 80_000_000)):
        # sharded: RSS ~ edges^0.1 (meets the goal); local: ~ edges^0.9 (does not)
        records += _train_record(scale, "sharded", 1000.0 * (edges / 5e6) ** 0.1, 10.0, edges)
        records += _train_record(scale, "local", 1000.0 * (edges / 5e6) ** 0.9, 10.0, edges)[1:]
    rows = rows_from_records(records)
    total = {(r["backend"], r["scale"]): r for r in rows if r.get("phase") == "total"}
    t = total[("sharded", 1.0)]
    each = t["processes_peak_rss_mb_each"]
    assert each["driver"] == [420.0]  # the driver's own reading beats the outside sample
    assert each["train_worker"] == [round(1000.0 * 16 ** 0.1, 1), 700.0]  # elementwise max
    assert each["shard_actor"] == [900.0, 800.0] and each["ray"] == [90.0, 60.0]
    assert t["worker_peak_rss_mb"] == each["train_worker"][0]
    assert t["process_peak_rss_mb_max"] == max(each["train_worker"][0], 900.0)
    assert t["variant"] == "workers=2 backend=sharded" and t["load_after"] == 2.1
    epoch = next(r for r in rows if r.get("phase") == "train_epoch" and r["backend"] == "sharded")
    assert epoch["shard_calls_per_step"] == 6.0 and epoch["shard_calls_goal_max"] == 6
    local_epoch = next(r for r in rows if r.get("phase") == "train_epoch"
                       and r["backend"] == "local")
    assert "shard_calls_per_step" not in local_epoch and local_epoch["store_calls_per_step"] == 6
    slopes = {r["backend"]: r for r in rows if r.get("of_phase") == "worker_rss"}
    assert slopes["sharded"]["worker_rss_slope"] == pytest.approx(0.1, abs=2e-3)
    assert slopes["sharded"]["meets_goal"] and not slopes["local"]["meets_goal"]
    assert slopes["local"]["worker_rss_slope"] == pytest.approx(0.9, abs=2e-3)
    assert slopes["sharded"]["scales"] == [0.0625, 0.25, 1.0]
    assert slopes["sharded"]["note"].startswith("dimensionless")
    # the memory slopes of the phases do not mix backends
    epoch_slopes = {r["backend"]: r for r in slope_rows(rows) if r["of_phase"] == "train_epoch"}
    assert epoch_slopes["local"]["memory_slope"] == pytest.approx(0.9, abs=2e-3)
    (est,) = local_estimate_rows(rows)
    assert est["scale"] == 4.0 and est["edges"] == 2 * proteins_size(4)[1]
    expect = 1000.0 * (est["edges"] / 5e6) ** 0.9
    assert est["worker_peak_rss_mb_estimate"] == pytest.approx(expect, rel=1e-3)
