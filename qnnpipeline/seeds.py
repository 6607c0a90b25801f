"""Repeat `qnn-train` runs over seeds and summarise them as mean ± sd (notebook 05).

    python -m qnnpipeline.seeds --config params.yaml --section mnist_seeds

The section names the runs to repeat and the seeds::

    mnist_seeds:
      runs: [mnist_cpu, mnist_fp]   # params.yaml sections, as qnn-train trains them
      seeds: [0, 1, 2]
      jobs: 2                       # single-threaded trainings at once

A run's own seed (its section's `train.seed`) is not trained again: the run `NAME` that
its own stage wrote is read instead (training is deterministic, so retraining would
reproduce it bit for bit). Every other seed trains `NAME_seedS`. Writes
results/tables/mnist_seeds.csv (one row per run and seed) and
results/metrics/mnist_seeds.json (mean, sd, n per run, and the BNN-minus-control
difference with its Welch 95 % interval).

The summary keeps each run's own-seed result (`own_seed`). When a run's section changes,
its stage retrains it and that result no longer matches: `claims.is_current` then says the
summary is stale, and the notebook and the claims table leave its numbers out.
`--summarise-only` rewrites the summary from runs already trained.
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from qnnlib.experiments import compare
from qnnlib.provenance import provenance

from . import paths
from .params import read_document, train_section
from .remote import run_sections
from .runs import load_metrics, write_json

COLUMNS = ["run", "seed", "name", "test_error_pct", "best_val_error_pct", "best_epoch", "epochs"]


def plan(config_path, section: str) -> tuple[dict, list[tuple[str, int, str]]]:
    """The section and its (run, seed, output name) triples, checked before any training."""
    document = read_document(config_path)
    spec = document.get(section)
    if not isinstance(spec, dict) or not spec.get("runs") or not spec.get("seeds"):
        raise ValueError(f"section {section!r} needs non-empty 'runs' and 'seeds' lists")
    seeds = spec["seeds"]
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) < len(seeds):
        raise ValueError(f"{section}.seeds must be distinct integers, got {seeds!r}")
    jobs = spec.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"{section}.jobs must be a positive integer, got {jobs!r}")
    triples = []
    for run in spec["runs"]:
        own_seed = train_section(config_path, run)["train"].get("seed", 0)
        triples += [(run, seed, run if seed == own_seed else f"{run}_seed{seed}") for seed in seeds]
    return spec, triples


def train_missing(config_path, triples, jobs: int, address: str | None = None) -> None:
    """Train every (run, seed) whose output is not the run's own stage, `jobs` at a time,
    through `qnnlib.executor` (`remote.run_sections`)."""
    runs = [(name, ["--section", run, "--set", f"train.seed={seed}", "--out-name", name])
            for run, seed, name in triples if name != run]
    run_sections(config_path, runs, workers=jobs, address=address)


OWN_SEED_KEYS = ("test_error", "best_val_error", "best_epoch", "epochs", "config")  # what `claims.is_current` compares


def summarise(triples) -> tuple[pd.DataFrame, dict]:
    """Per-seed rows and the mean ± sd summary of every run."""
    rows, own_seed = [], {}
    for run, seed, name in triples:
        metrics = load_metrics(name)
        if metrics is None:
            raise FileNotFoundError(f"run {name!r} has no metrics: run its stage (or qnn-train) first")
        if metrics["config"]["seed"] != seed:
            raise ValueError(f"run {name!r} was trained with seed {metrics['config']['seed']}, not {seed}")
        if name == run:
            own_seed[run] = {key: metrics.get(key) for key in OWN_SEED_KEYS}
        rows.append({"run": run, "seed": seed, "name": name,
                     "test_error_pct": 100 * metrics["test_error"],
                     "best_val_error_pct": 100 * metrics["best_val_error"],
                     "best_epoch": metrics["best_epoch"], "epochs": metrics["epochs"]})
    table = pd.DataFrame(rows, columns=COLUMNS)
    summary = {}
    for run, group in table.groupby("run", sort=False):
        summary[run] = {"n_seeds": len(group), "own_seed": own_seed.get(run)}
        for column in ("test_error_pct", "best_val_error_pct"):
            values = group[column]
            summary[run][f"{column}_mean"] = round(float(values.mean()), 3)
            summary[run][f"{column}_sd"] = round(float(values.std(ddof=1)), 3) if len(values) > 1 else None
    return table, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qnn-seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--section", default="mnist_seeds")
    parser.add_argument("--ray-address", help="train on this Ray cluster (default: $RAY_ADDRESS, "
                        "else a local Ray for jobs > 1)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="train nothing: summarise the runs already trained")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        spec, triples = plan(args.config, args.section)
    except (ValueError, KeyError) as error:
        print(f"qnn-seeds: error: {error}", file=sys.stderr)
        return 2
    if not args.summarise_only:
        train_missing(args.config, triples, spec.get("jobs", 1), args.ray_address)
    table, summary = summarise(triples)
    table.to_csv(paths.output("tables", f"{args.section}.csv"), index=False, float_format="%.4g")
    runs = list(summary)
    metrics = {"runs": summary, "seeds": spec["seeds"]}
    if len(runs) == 2:  # the BNN and its control: what binarization costs, with its interval
        a, b = (table.loc[table["run"] == run, "test_error_pct"] / 100 for run in runs)
        metrics["difference"] = {"runs": runs, **compare(a, b).record()}
    metrics["provenance"] = provenance(threads=1, wall_seconds=time.perf_counter() - start)
    write_json(paths.output("metrics", f"{args.section}.json"), metrics)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
