"""Small experiment grids: train a list of configurations over several seeds.

Introduced by notebook 01 (arXiv:1609.07061 Sec. 2.1: deterministic vs stochastic
binarization of weights and activations, several seeds each) and notebook 03 (Sec. 2.3:
the straight-through estimator with and without saturation); any notebook comparing
variants of the MNIST network can use it.

A configuration is a dict::

    {"name": "stochastic weights",                 # required, unique
     "model": {"hidden": 512, "depth": 2, "weight_mode": "stochastic"},
     "train": {"epochs": 5, "n_train": 10000},     # TrainConfig overrides (optional)
     "weights": "stochastic"}                      # any other key: a label column

`model` is a `build_model` dict or a callable `model(generator) -> nn.Module`. Every run
of seed `s` seeds python/numpy/torch with `s` before building the model (so the
initialisation depends on the seed), hands the model an explicit `torch.Generator` for
stochastic binarization drawn from a stream independent of the data shuffling
(`binarization_generator`), and trains with `TrainConfig(seed=s)`.
"""
from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import pandas as pd
import torch

from .models import build_model
from .training import TrainConfig, TrainResult, seed_everything
from .training import train as train_model

__all__ = ["GridResult", "run_grid", "seeded_model", "summarize", "binarization_generator",
           "compare", "Comparison", "MIN_SEEDS", "t_quantile",
           "format_mean_std"]

RUN_COLUMNS = ["best_epoch", "best_val_error", "test_error", "final_val_error",
               "final_test_error", "epochs", "seconds"]
_RESERVED = {"name", "model", "train"}


def binarization_generator(seed: int) -> torch.Generator:
    """The generator for stochastic-binarization draws of run `seed` (notebook 01).

    Seeded from `numpy.random.SeedSequence([seed, 1])`, not from `seed` itself: the
    training loop seeds its shuffling generator with `seed`, and two generators with
    the same seed would produce the same uniform stream.
    """
    state = np.random.SeedSequence([int(seed), 1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class GridResult:
    """What `run_grid` returns.

    runs: one row per (configuration, seed): name, labels, seed, best_epoch,
        best_val_error, test_error (at the best-validation epoch, the paper's number),
        final_val_error, final_test_error (last epoch), epochs, seconds, and any
        columns returned by `after_run`. Errors are fractions in [0, 1].
    history: one row per (configuration, seed, epoch): name, labels, seed and the
        columns of `TrainResult.history` (epoch, lr, train_loss, train_error,
        val_error, test_error, seconds).
    """

    runs: pd.DataFrame
    history: pd.DataFrame

    def summary(self, metric: str = "test_error", by: str | Sequence[str] = "name") -> pd.DataFrame:
        """`summarize(self.runs, metric, by)`."""
        return summarize(self.runs, metric, by)


def _normalise(configs) -> list[dict]:
    if isinstance(configs, Mapping):
        configs = [{"name": name, **dict(spec)} for name, spec in configs.items()]
    configs = [dict(c) for c in configs]
    if not configs:
        raise ValueError("run_grid needs at least one configuration")
    names = []
    for config in configs:
        if "name" not in config or "model" not in config:
            raise ValueError(f"each configuration needs 'name' and 'model' keys, got {sorted(config)}")
        names.append(config["name"])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"configuration names must be unique; repeated: {duplicates}")
    return configs


def seeded_model(spec, seed: int):
    """The one way notebooks seed and build a model before `training.train` (notebooks
    01-04): seed python/numpy/torch with `seed` (the initialisation depends on it), then
    build `spec` (a `build_model` dict or a callable `spec(generator)`) with the
    stochastic-binarization generator `binarization_generator(seed)`."""
    seed_everything(seed)
    generator = binarization_generator(seed)
    if callable(spec):
        return spec(generator)
    if isinstance(spec, Mapping):
        spec = dict(spec)
        spec.setdefault("generator", generator)
        return build_model(spec)
    raise TypeError(f"'model' must be a build_model dict or a callable, got {type(spec).__name__}")


def run_grid(configs: Sequence[dict] | Mapping[str, dict], splits: dict,
             seeds: Iterable[int] = (0,), train: dict | None = None,
             after_run: Callable[[dict, int, TrainResult], dict] | None = None,
             progress: bool = False, log: Callable[[str], None] | None = None,
             context: Callable[[dict, int, torch.nn.Module], ContextManager] | None = None,
             workers: int = 1) -> GridResult:
    """Train every configuration with every seed and collect tidy DataFrames.

    configs: list of configuration dicts (see the module docstring) or a mapping
        name -> configuration.
    splits: {"train", "val", "test"} as `train` accepts them (`load_mnist()` or
        (inputs, labels) pairs).
    seeds: the seeds; runs go seed-major within each configuration.
    train: TrainConfig values shared by all configurations (a configuration's own
        "train" dict overrides them; the seed always comes from `seeds`).
    after_run: optional `after_run(config, seed, result) -> dict` called after each run
        (the model is at its best-validation epoch); its dict adds columns to `runs`.
    context: optional `context(config, seed, model)` returning a context manager that
        wraps the training of that run (notebook 02 holds the accumulators in another
        number format this way); `after_run` is called after it has exited.
    workers: runs trained at once, each in its own single-threaded process (forked, so
        notebook-defined callables work). Every run is seeded on its own, so the results
        do not depend on `workers`; only the wall time does.
    progress: show the per-run tqdm bar. log: e.g. `print`, called with one line per run.
    """
    configs = _normalise(configs)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_grid needs at least one seed")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    jobs = [(config, seed) for config in configs for seed in seeds]
    task = _GridTask(splits, dict(train or {}), after_run, context, progress and workers == 1)
    for config, _ in jobs:  # fail on a bad configuration before any training starts
        TrainConfig.from_dict({**task.shared, **dict(config.get("train", {})), "seed": 0})
    results = _map_runs(task, jobs, workers)
    run_rows, histories = [], []
    for (config, seed), (row, history) in zip(jobs, results):
        run_rows.append(row)
        histories.append(history)
        if log is not None:
            log(f"{config['name']} seed={seed}: test error {100 * row['test_error']:.2f}% "
                f"(best epoch {row['best_epoch']}) in {row['seconds']:.1f} s")
    label_columns = list(dict.fromkeys(k for c in configs for k in c if k not in _RESERVED))
    history = pd.concat(histories, ignore_index=True)
    front = ["name", *label_columns, "seed"]
    history = history[front + [c for c in history.columns if c not in front]]
    return GridResult(pd.DataFrame(run_rows), history)


@dataclass
class _GridTask:
    """What every run of one `run_grid` call shares."""

    splits: dict
    shared: dict
    after_run: Callable | None
    context: Callable | None
    progress: bool

    def __call__(self, job: tuple[dict, int]) -> tuple[dict, pd.DataFrame]:
        config, seed = job
        labels = {k: v for k, v in config.items() if k not in _RESERVED}
        values = {**self.shared, **dict(config.get("train", {})), "seed": seed}
        values.setdefault("progress", self.progress)
        train_config = TrainConfig.from_dict(values)
        model = seeded_model(config["model"], seed)
        start = time.perf_counter()
        with (self.context(config, seed, model) if self.context else nullcontext()):
            result = train_model(model, self.splits, train_config)
        seconds = time.perf_counter() - start
        history = result.history
        last = history.iloc[-1] if len(history) else None
        row = {"name": config["name"], **labels, "seed": seed,
               "best_epoch": result.best_epoch, "best_val_error": result.best_val_error,
               "test_error": result.test_error,
               "final_val_error": float(last["val_error"]) if last is not None else np.nan,
               "final_test_error": float(last["test_error"]) if last is not None else np.nan,
               "epochs": len(history), "seconds": seconds}
        if self.after_run is not None:
            extra = self.after_run(config, seed, result) or {}
            clash = sorted(set(extra) & set(row))
            if clash:
                raise ValueError(f"after_run returned reserved columns {clash}")
            row.update(extra)
        return row, history.assign(name=config["name"], **labels, seed=seed)


_CURRENT_TASK: _GridTask | None = None


def _run_in_worker(job):
    torch.set_num_threads(1)
    return _CURRENT_TASK(job)


def _map_runs(task: _GridTask, jobs: list, workers: int) -> list:
    """`task` over `jobs` in order, in `workers` forked processes (or here, for 1)."""
    global _CURRENT_TASK
    workers = min(workers, len(jobs))
    if workers == 1:
        return [task(job) for job in jobs]
    # Forked children inherit the task (data, callables) without pickling it.
    _CURRENT_TASK = task
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_run_in_worker, jobs, chunksize=1)
    finally:
        _CURRENT_TASK = None


def summarize(runs: pd.DataFrame, metric: str = "test_error",
              by: str | Sequence[str] = "name") -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1; 0 for a single seed), min, max and count
    of `metric` per group, groups in order of first appearance."""
    by = [by] if isinstance(by, str) else list(by)
    grouped = runs.groupby(by, sort=False)[metric]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.rename(columns={"count": "n"})


def format_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """'1.23 ± 0.04' (values times `scale`, e.g. error fractions as percent)."""
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def t_quantile(probability: float, df: float) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (bisection on the
    numerically integrated density: accurate to ~1e-6, enough for confidence intervals)."""
    if not 0.5 <= probability < 1 or df <= 0:
        raise ValueError(f"need 0.5 <= probability < 1 and df > 0, got {probability}, {df}")

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20001)
        log_density = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                       - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        return 0.5 + float(np.trapezoid(np.exp(log_density), grid))

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


MIN_SEEDS = 3   # the project's evidence rule: a conclusion rests on at least this many seeds per side


@dataclass(frozen=True)
class Comparison:
    """Mean of `a` minus mean of `b` over seeds, with Welch's 95 % confidence interval.

    verdict: "single run" (a side has fewer than 2 seeds: no interval), "lower" or
    "higher" (the interval excludes 0), else "no clear difference".
    conclusion(): the verdict a notebook may state, "single run" below `MIN_SEEDS` seeds.
    record(): the JSON-ready form the notebooks' metrics keep.
    within(tolerance): the whole interval lies inside [-tolerance, +tolerance].
    """

    difference: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def verdict(self) -> str:
        if min(self.n_a, self.n_b) < 2:
            return "single run"
        if self.high < 0:
            return "lower"
        if self.low > 0:
            return "higher"
        return "no clear difference"

    def conclusion(self, min_seeds: int = MIN_SEEDS) -> str:
        """`verdict`, or "single run" when a side has fewer than `min_seeds` seeds: then no
        conclusion is drawn, whatever the interval says."""
        return "single run" if min(self.n_a, self.n_b) < min_seeds else self.verdict

    def record(self, scale: float = 100.0, min_seeds: int = MIN_SEEDS) -> dict:
        """Difference and interval times `scale` (100: error fractions as percentage points;
        1: already in points), None where undefined; seeds per side; `conclusion`."""
        def points(value: float):
            return round(value * scale, 4) if math.isfinite(value) else None

        return {"difference_pct": points(self.difference), "ci_low_pct": points(self.low),
                "ci_high_pct": points(self.high), "n_a": self.n_a, "n_b": self.n_b,
                "verdict": self.conclusion(min_seeds)}

    def within(self, tolerance: float) -> bool:
        return min(self.n_a, self.n_b) >= 2 and -tolerance <= self.low and self.high <= tolerance

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        """'+0.31 points (95 % CI -0.05 to +0.67, 3 vs 3 seeds)'."""
        text = f"{self.difference * scale:+.2f}{unit}"
        if min(self.n_a, self.n_b) < 2:
            return f"{text} (single run)"
        return (f"{text} (95 % CI {self.low * scale:+.2f} to {self.high * scale:+.2f}, "
                f"{self.n_a} vs {self.n_b} seeds)")


def compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Compare two groups of per-seed results (e.g. test errors) with Welch's t interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or not (a.size and b.size):
        raise ValueError("compare needs non-empty, finite results on both sides")
    difference = float(a.mean() - b.mean())
    if min(a.size, b.size) < 2:
        return Comparison(difference, math.nan, math.nan, a.size, b.size)
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    spread = math.sqrt(var_a + var_b)
    if spread == 0:
        return Comparison(difference, difference, difference, a.size, b.size)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1) + var_b ** 2 / (b.size - 1))
    half = t_quantile(0.5 + confidence / 2, df) * spread
    return Comparison(difference, difference - half, difference + half, a.size, b.size)
