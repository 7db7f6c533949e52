#!/usr/bin/env python
"""Submit a distgcl training run to a Ray cluster with ``ray job submit``.

    python launch/submit.py configs/pubmed_nml.yaml \\
        --address http://HEAD:8265 --num-workers 4 --run-name pubmed-nml-1 \\
        --storage /shared/distgcl-runs [--set train.epochs=50 ...] [--no-wait] [--dry-run]

What it runs (printed first, so it can be copied)::

    ray job submit --address ADDR --submission-id distgcl-NAME-TIME \\
        --runtime-env-json '{"working_dir": REPO, "excludes": [...], "env_vars": {...}}' \\
        -- python -m distgcl.cli train CONFIG --num-workers N --run-name NAME --storage PATH

* ``working_dir`` ships this checkout (configs and code; ``python -m distgcl.cli`` from it is
  ``distgcl train`` of exactly the submitted code, on the driver and on every worker) without
  ``.git``, virtualenvs, run folders, caches and data files (Ray caps the upload at 100-500 MB;
  datasets are read from ``DISTGCL_DATA`` on the nodes, never shipped).
* ``--storage`` must be a path every node sees (NFS or another shared mount) on a multi-node
  cluster: checkpoints, metrics.jsonl and result.json land in ``STORAGE/NAME``.
* Resume: a job killed or failed is resumed by submitting it again with the same ``--run-name``
  (Ray Train V2 resumes from ``(storage_path, name)``; a job is never restarted by Ray itself).
* ``DISTGCL_DATA``, ``DISTGCL_CACHE``, ``DISTGCL_STORAGE`` and ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
  are passed on to the job when set here (``--env KEY=VALUE`` adds more).
* Authentication follows the cluster: the script asks the dashboard which mode it runs
  (``/api/authentication_mode``, a public endpoint). Without token authentication it submits
  plainly; with it, it passes ``RAY_AUTH_MODE=token`` and uses the token Ray documents
  (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``); when
  none is there it says so in one line (exit 2) with the command that prints the head's token.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXCLUDES = [".git", ".venv", ".ci-venv", "**/__pycache__", "*.egg-info", "runs", "outputs",
            "bench/results/_work", ".pytest_cache", "*.pt", "*.npy", "*.npz", "*.csv.gz",
            "/data", "**/raw", "**/processed"]
FORWARDED_ENV = ("DISTGCL_DATA", "DISTGCL_CACHE", "DISTGCL_STORAGE",
                 "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")


def build_command(args: argparse.Namespace) -> list[str]:
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env_vars.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    for item in args.env:
        key, _, value = item.partition("=")
        env_vars[key] = value
    runtime_env = {"working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": env_vars}
    submission = args.submission_id or (
        f"distgcl-{args.run_name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    config = Path(args.config)
    config_arg = (str(config.resolve().relative_to(REPO)) if config.resolve().is_relative_to(REPO)
                  else str(config.resolve()))
    cmd = [ray_cli(), "job", "submit", "--address", args.address, "--submission-id", submission,
           "--runtime-env-json", json.dumps(runtime_env)]
    if args.entrypoint_num_cpus is not None:
        cmd += ["--entrypoint-num-cpus", str(args.entrypoint_num_cpus)]
    if args.no_wait:
        cmd.append("--no-wait")
    cmd += ["--", "python", "-m", "distgcl.cli", "train", config_arg,
            "--num-workers", str(args.num_workers), "--run-name", args.run_name,
            "--storage", str(Path(args.storage).resolve())]
    if args.use_gpu:
        cmd.append("--use-gpu")
    for item in args.overrides:
        cmd += ["--set", item]
    return cmd


def ray_cli() -> str:
    """The ``ray`` command: on PATH, else beside this interpreter (a venv run without activation)."""
    if shutil.which("ray"):
        return "ray"
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


class SubmitError(RuntimeError):
    """A problem the user fixes before submitting (printed as one line, exit 2)."""


def cluster_auth_mode(address: str, timeout_s: float = 10.0) -> str:
    """The head's authentication mode, ``"disabled"`` or ``"token"``, from its dashboard."""
    url = address.rstrip("/") + "/api/authentication_mode"
    if "://" not in url:
        url = "http://" + url
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (user URL)
            mode = json.loads(response.read().decode())["authentication_mode"]
    except urllib.error.HTTPError as err:
        if err.code == 404:  # a Ray without token authentication has no such endpoint
            return "disabled"
        raise SubmitError(f"the Ray dashboard at {address} answered {err.code} to {url}") from err
    except (OSError, ValueError, KeyError) as err:
        raise SubmitError(f"cannot reach the Ray dashboard at {address} ({err}); is the head "
                          f"running (`ray start --head`) and is --address its dashboard "
                          f"(http://HEAD:8265)?") from err
    return str(mode)


def find_auth_token(env: dict[str, str]) -> str | None:
    """Where Ray's client finds a token, in Ray's order; ``None`` when there is none."""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    candidates = []
    if env.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser())
    home = env.get("HOME")
    candidates.append((Path(home) if home else Path.home()) / ".ray" / "auth_token")
    for path in candidates:
        if path.is_file() and path.read_text().strip():
            return str(path)
    return None


def submit_env(address: str, env: dict[str, str]) -> dict[str, str]:
    """The client's environment for ``ray job submit``, following the cluster's auth mode."""
    env = dict(env)
    mode = cluster_auth_mode(address)
    if mode != "token":
        env.pop("RAY_AUTH_MODE", None)  # a forced token mode fails against a plain head
        return env
    if find_auth_token(env) is None:
        raise SubmitError(
            f"the cluster at {address} uses token authentication and no token is set here "
            f"(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token): on the head run "
            f"`ray get-auth-token` and pass it as RAY_AUTH_TOKEN=... (or copy the head's "
            f"~/.ray/auth_token here)")
    env["RAY_AUTH_MODE"] = "token"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (inside this checkout, or an absolute path "
                                       "that exists on the cluster)")
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS")
                        or os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="Ray dashboard / job server address")
    parser.add_argument("--num-workers", type=int, required=True)
    parser.add_argument("--run-name", required=True, help="the same name resumes the run")
    parser.add_argument("--storage", required=True, help="run storage every node can reach")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment variable for the job")
    parser.add_argument("--submission-id", default=None)
    parser.add_argument("--entrypoint-num-cpus", type=float, default=None)
    parser.add_argument("--no-wait", action="store_true",
                        help="return after submitting; follow with `ray job logs -f ID`")
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error("--num-workers must be >= 1")
    cmd = build_command(args)
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if args.dry_run:
        return 0
    try:
        env = submit_env(args.address, dict(os.environ))
    except SubmitError as err:
        print(f"launch/submit.py: error: {err}", file=sys.stderr)
        return 2
    return subprocess.call(cmd, env=env, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
