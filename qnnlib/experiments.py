"""Small experiment grids: train a list of configurations over several seeds.

Their statistics (`summarize`, `compare`, `t_quantile`, `MIN_SEEDS`) live in
`qnnlib.statistics` and are re-exported here, where the notebooks import them.

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

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import numpy as np
import pandas as pd
import torch

from . import executor, grid_store
from .models import build_model
from .statistics import MIN_SEEDS, Comparison, compare, format_mean_std, summarize, t_quantile  # noqa: F401
from .training import TrainConfig, TrainResult, seed_everything
from .training import train as train_model

__all__ = ["GridResult", "run_grid", "seeded_model", "summarize", "binarization_generator",
           "compare", "Comparison", "MIN_SEEDS", "t_quantile",
           "format_mean_std"]

STORE_VARIABLE = "QNN_GRID_STORE"  # run_grid's default store (the notebook runner sets it)
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
    nodes: list[str] | None = None  # where each run ran ("local", "stored" or a Ray node id)

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
             workers: int = 1, store: str | Path | None = None,
             address: str | None = None) -> GridResult:
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
    workers: runs trained at once (`qnnlib.executor`: serial for 1, else Ray, locally or
        on the cluster at `address` / $RAY_ADDRESS). Every run is seeded on its own and
        single-threaded, so the results do not depend on `workers` or on where the runs
        ran; only the wall time does.
    store: a folder keeping each finished run (`qnnlib.grid_store`; default
        $QNN_GRID_STORE, else none): a rerun of the grid trains only the runs not there.
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
    results, nodes = _run_jobs(task, jobs, workers, store or os.environ.get(STORE_VARIABLE), address)
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
    return GridResult(pd.DataFrame(run_rows), history, nodes)


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


def _run_jobs(task: _GridTask, jobs: list, workers: int, store, address) -> tuple[list, list]:
    """`task` over `jobs` in order through `qnnlib.executor`, runs found in `store` skipped
    and each finished run stored as soon as it comes home."""
    keys = [None] * len(jobs)
    if store:
        data = grid_store.data_digest(task.splits)
        wrappers = {"after_run": task.after_run, "context": task.context}
        keys = [grid_store.run_key(config, seed, task.shared, wrappers, data) for config, seed in jobs]
    found = [grid_store.load_run(store, key) if key else None for key in keys]
    missing = [index for index, result in enumerate(found) if result is None]

    def keep(position, result):
        if store:
            grid_store.save_run(store, keys[missing[position]], *result)
    outcome = executor.run_tasks(task, [jobs[i] for i in missing], workers, address=address,
                                 names=[f"{jobs[i][0]['name']} seed={jobs[i][1]}" for i in missing],
                                 on_result=keep)
    nodes = ["stored"] * len(jobs)
    for position, index in enumerate(missing):
        found[index], nodes[index] = outcome.results[position], outcome.nodes[position]
    return found, nodes
