"""The executor's local default (a local Ray started on demand) against the fork `Pool` it
replaced, on notebook 01's grid (params.yaml `binarization`: 4 configurations x 3 seeds,
2 at a time), side by side in one run, start-up counted.

    python benchmarks/executor.py [--rounds 1] [--out results/benchmarks/executor.json]

Each round times the Pool and the executor, alternating which goes first (a fresh local
Ray each time: `ray.init` is inside the timing), and checks that both give the same
numbers. The goal: the executor no more than 5 % slower. It also records the summed time
of the runs themselves under each (`*_run_s`): the wall-time ratio minus that ratio is
start-up and the imbalance of the last runs; the mean seconds per run in the Pool, in this
process and on Ray's worker; and the CPU seconds Ray's own processes took over the grid.
Before the rounds it times a local Ray's start-up on its own (`ray.init` as the executor
calls it, on an otherwise idle machine) and counts the processes it starts and the CPU
time they take. Writes a JSON report with provenance.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qnnpipeline  # noqa: E402,F401 (pinned numerics, as the notebooks)
from qnnlib import data, executor, experiments  # noqa: E402
from qnnlib.provenance import provenance  # noqa: E402
from qnnpipeline import paths  # noqa: E402
from qnnpipeline.params import notebook_params  # noqa: E402

COMPARED = ["best_epoch", "best_val_error", "test_error", "final_val_error", "final_test_error"]


def notebook_01_grid() -> tuple[list, dict, list, dict, int]:
    """Notebook 01's configurations, data, seeds and training settings (its cell 15)."""
    p = notebook_params("binarization")
    modes = ("deterministic", "stochastic")
    configs = [{"name": f"W{w[:3]}_A{a[:3]}", "weights": w, "activations": a,
                "model": dict(hidden=p["hidden"], depth=p["depth"], weight_mode=w, act_mode=a,
                              dropout_in=p["dropout_in"], dropout_hidden=p["dropout_hidden"])}
               for w in modes for a in modes]
    train = dict(epochs=p["epochs"], batch_size=p["batch_size"], lr_start=p["lr_start"], lr_end=p["lr_end"],
                 n_train=p["n_train"], n_val=p["n_val"], n_test=p["n_test"], threads=p["threads"], progress=False)
    splits = data.load_mnist(p["dataset"], root=paths.data())
    return configs, splits, [p["seed"] + k for k in range(p["n_seeds"])], train, p["workers"]


_TASK = None


def _in_forked_worker(job):
    import torch

    torch.set_num_threads(1)
    return _TASK(job)


def with_fork_pool(configs, splits, seeds, train, workers) -> list:
    """What run_grid did before the executor: forked single-threaded processes."""
    global _TASK
    _TASK = experiments._GridTask(splits, dict(train), None, None, False)
    jobs = [(config, seed) for config in configs for seed in seeds]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [row for row, _ in pool.map(_in_forked_worker, jobs, chunksize=1)]


def ray_startup(settle_s: float = 5.0) -> dict:
    """Seconds to `import ray` and to `ray.init` a local Ray of one CPU with the executor's
    options; then, after `settle_s`, the processes it started and their CPU seconds."""
    import psutil

    clock = time.perf_counter()
    import ray

    imported = time.perf_counter()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    started = time.perf_counter()
    time.sleep(settle_s)
    children = psutil.Process().children(recursive=True)
    cpu_s = sum(sum(child.cpu_times()[:2]) for child in children if child.is_running())
    ray.shutdown()
    return {"import_s": round(imported - clock, 2), "init_s": round(started - imported, 2),
            "processes": len(children), "their_cpu_s_after_settle": round(cpu_s, 2),
            "settle_s": settle_s}


def _ray_services_cpu_s() -> float:
    """CPU seconds used so far by the local Ray's own processes (GCS, raylet, agents,
    monitors), its workers (`ray::...`, which train) left out."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if not child.name().startswith("ray::") and not " ".join(child.cmdline()).startswith("ray::"):
                total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return round(total, 2)


def _where_the_runs_went(grid, pool_rows) -> dict:
    """Mean seconds per run: in the Pool, and in the executor here and on Ray's worker,
    to tell apart a cost on either side."""
    here = [node == "local" for node in grid.nodes]
    seconds = grid.runs["seconds"]
    mean = lambda values: round(float(sum(values) / max(len(values), 1)), 2)
    return {"pool_s_per_run": mean([row["seconds"] for row in pool_rows]),
            "executor_s_per_run_here": mean([s for s, h in zip(seconds, here) if h]),
            "executor_s_per_run_on_ray": mean([s for s, h in zip(seconds, here) if not h]),
            "runs_here": sum(here)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(paths.results_dir() / "benchmarks" / "executor.json"))
    args = parser.parse_args(argv)
    configs, splits, seeds, train, workers = notebook_01_grid()
    start, rounds = time.perf_counter(), []
    startup = ray_startup()
    print(f"local Ray start-up: import {startup['import_s']} s, init {startup['init_s']} s, "
          f"{startup['processes']} processes, {startup['their_cpu_s_after_settle']} CPU-s")
    for round_number in range(args.rounds):
        timings = {}
        # alternate which goes first, so that neither always meets a warmer machine
        for method in (("pool", "executor") if round_number % 2 == 0 else ("executor", "pool")):
            executor.shutdown()  # a fresh local Ray: its start-up is part of the timing
            clock = time.perf_counter()
            if method == "pool":
                pool_rows = with_fork_pool(configs, splits, seeds, train, workers)
            else:
                grid = experiments.run_grid(configs, splits, seeds=seeds, train=train,
                                            workers=workers, store=None)
                ray_services_cpu_s = _ray_services_cpu_s()
            timings[method] = time.perf_counter() - clock
        pool_s, ray_s = timings["pool"], timings["executor"]
        same = all(grid.runs.iloc[i][key] == row[key] for i, row in enumerate(pool_rows) for key in COMPARED)
        rounds.append({"pool_s": round(pool_s, 2), "executor_s": round(ray_s, 2),
                       "ratio": round(ray_s / pool_s, 4), "same_numbers": bool(same),
                       "pool_run_s": round(sum(row["seconds"] for row in pool_rows), 2),
                       "executor_run_s": round(float(grid.runs["seconds"].sum()), 2),
                       **_where_the_runs_went(grid, pool_rows), "ray_services_cpu_s": ray_services_cpu_s})
        print(f"round {round_number + 1}: fork Pool {pool_s:.1f} s, executor (local Ray) {ray_s:.1f} s, "
              f"ratio {ray_s / pool_s:.3f}, same numbers: {same}")
    executor.shutdown()
    ratios = sorted(r["ratio"] for r in rounds)
    report = {"grid": "notebook 01 (params.yaml binarization)", "runs": len(configs) * len(seeds),
              "ratio_min_median_max": [ratios[0], ratios[len(ratios) // 2], ratios[-1]],
              "workers": workers, "goal": "executor / Pool <= 1.05, start-up counted",
              "ray_startup_idle": startup, "rounds": rounds,
              "provenance": provenance(threads=1, wall_seconds=time.perf_counter() - start)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["same_numbers"] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
