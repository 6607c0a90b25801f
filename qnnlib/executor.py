"""The one place that runs trainings in parallel: serial here, or on Ray.

Introduced for the experiment grids (`experiments.run_grid`, notebooks 01-04); the
`qnn-train` sections side by side and the seed repeats (`qnnpipeline.cli`,
`qnnpipeline.seeds`) use it too.

- **Serial, in this process** when one worker is asked for and no cluster is named, or
  when Ray is not installed: the numerical core needs nothing beyond torch.
- **A local Ray**, started on demand, when several workers are asked for: this process
  trains one run at a time while Ray starts and then alongside it, and the local Ray
  (one CPU per task, `workers - 1` CPUs, no dashboard) trains the others. It stays up
  for the next grid of this process.
- **A Ray cluster** when given its address (`address=`, or Ray's own `RAY_ADDRESS`):
  tasks go wherever the cluster has a free CPU, or a GPU for tasks that ask for one
  (`gpus=1`: Ray sets CUDA_VISIBLE_DEVICES).

Every task runs single-threaded (`torch.set_num_threads(1)`), with this process's
numeric settings (`qnnlib.numerics`) in its environment, so a task's result does not
depend on where it ran: a grid gives the same bits serially, locally and on a cluster.

Results come home as each task finishes: `on_result(index, result)` is called in this
process at once (run_grid stores finished runs there, so a rerun retrains only missing
ones). A task whose worker dies is retried once by Ray; if it fails again it is reported
by name (`TasksFailed`) after every other task has finished, and their results are kept.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from . import numerics

__all__ = ["run_tasks", "Outcome", "TasksFailed", "ray_available", "shutdown"]

ADDRESS_VARIABLE = "RAY_ADDRESS"  # Ray's own convention for naming a cluster


class TasksFailed(RuntimeError):
    """Some tasks failed (after one retry where the worker died); the others finished."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        lines = "\n".join(f"  {name}: {reason}" for name, reason in failures.items())
        super().__init__(f"{len(failures)} task(s) failed; the others finished and were kept:\n{lines}")


@dataclass
class Outcome:
    """What `run_tasks` returns: each task's result in the order of the jobs, and where
    it ran ("local" serially, else the Ray node id)."""

    results: list
    nodes: list[str] = field(default_factory=list)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _import_ray():
    """`import ray`, without the notice it logs when imported in a notebook kernel (it
    would land in the notebook's stderr, which nbval compares)."""
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    import ray

    return ray


def run_tasks(function: Callable, jobs: Sequence, workers: int = 1, *, names: Sequence[str] | None = None,
              address: str | None = None, gpus: float = 0,
              on_result: Callable[[int, object], None] | None = None) -> Outcome:
    """`function(job)` for every job; see the module docstring for where they run.

    names: one label per job, for progress and failure messages (default: the index).
    address: a Ray cluster (default: $RAY_ADDRESS when set; else a local Ray for
        workers > 1). gpus: GPUs per task on Ray (0: CPU tasks)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(jobs))]
    address = address or os.environ.get(ADDRESS_VARIABLE) or None
    on_result = on_result or (lambda index, result: None)
    if (workers == 1 and address is None) or not jobs or not ray_available():
        return _serial(function, jobs, on_result)
    if address is None and not gpus:
        return _here_and_on_local_ray(function, jobs, workers, names, on_result)
    return _on_ray(function, jobs, workers, names, address, gpus, on_result)


def _single_threaded(function, job):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(job)
    finally:
        torch.set_num_threads(threads)


def _serial(function, jobs, on_result) -> Outcome:
    results = []
    for index, job in enumerate(jobs):
        results.append(_single_threaded(function, job))
        on_result(index, results[-1])
    return Outcome(results, ["local"] * len(results))


def _task(function, job):
    """What a Ray worker runs: the job, single-threaded, and the node it ran on."""
    ray = _import_ray()
    return _single_threaded(function, job), ray.get_runtime_context().get_node_id()


def _environment() -> dict[str, str]:
    """The numeric settings workers must compute with (as this process does)."""
    name = numerics.profile()
    return {numerics.ENV: name, **numerics.PROFILES[name]}


_OWNER: dict = {}  # the thread that started the local Ray, and how to release it


def _connect(workers: int, address: str | None):
    """Ray, connected: to the cluster at `address`, or to a local Ray of `workers` CPUs
    (started here on first use). A local Ray is started from a thread that lives as long
    as it does: Ray's processes end when the thread that started them ends."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    # Errors only: Ray's start-up notices would land in notebooks' stderr (nbval compares it)
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
               "logging_level": logging.ERROR}
    if address is not None:  # a cluster's workers get this process's numeric settings
        ray.init(address=address, runtime_env={"env_vars": _environment()}, **options)
        return ray
    started, release, errors = threading.Event(), threading.Event(), []

    def own():
        try:  # one CPU per run; its workers inherit this process's environment
            ray.init(address="local", num_cpus=workers, **options)  # never a cluster found here
        except Exception as error:  # reported to the caller below
            errors.append(error)
        started.set()
        release.wait()

    _OWNER.update(thread=threading.Thread(target=own, name="local-ray", daemon=True), release=release)
    _OWNER["thread"].start()
    started.wait()
    if errors:
        raise errors[0]
    return ray


def _here_and_on_local_ray(function, jobs, workers, names, on_result) -> Outcome:
    """`workers` runs at once: this process trains one (so Ray's start-up, seconds on a
    small machine, overlaps useful work) and a local Ray with `workers - 1` CPUs the rest."""
    queue, lock = list(range(len(jobs))), threading.Lock()
    results, nodes, failures, stop = [None] * len(jobs), ["local"] * len(jobs), {}, threading.Event()

    def next_job():
        with lock:
            return queue.pop(0) if queue and not stop.is_set() else None

    def finished(index, result, node):
        with lock:
            results[index], nodes[index] = result, node
            on_result(index, result)

    def dispatch():
        ray = _connect(workers - 1, None)
        remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_task)
        shared, running = ray.put(function), {}
        while True:
            while len(running) < workers - 1 and (index := next_job()) is not None:
                running[remote.remote(shared, jobs[index])] = index
            if not running:
                return
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for reference in done:
                index = running.pop(reference)
                try:
                    finished(index, *ray.get(reference))
                except ray.exceptions.RayError as error:
                    failures[names[index]] = str(error).strip().splitlines()[-1][:300]
            if stop.is_set():
                for reference in running:
                    ray.cancel(reference, force=True)
                return

    def dispatch_or_warn():
        try:
            dispatch()
        except Exception as error:  # this process goes on alone: slower, same numbers
            warnings.warn(f"the local Ray could not train ({type(error).__name__}: {error}); "
                          "the runs left train here, one at a time", RuntimeWarning)

    dispatcher = threading.Thread(target=dispatch_or_warn, name="ray-dispatch", daemon=True)
    dispatcher.start()
    try:
        while (index := next_job()) is not None:
            finished(index, _single_threaded(function, jobs[index]), "local")
    except BaseException:
        stop.set()
        raise
    finally:
        dispatcher.join()
    if failures:
        raise TasksFailed(failures)
    return Outcome(results, nodes)


def _on_ray(function, jobs, workers, names, address, gpus, on_result) -> Outcome:
    ray = _connect(workers, address)
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1, retry_exceptions=False)(_task)
    shared = ray.put(function)  # sent once (it holds the data), not once per task
    pending = {remote.remote(shared, job): index for index, job in enumerate(jobs)}
    results, nodes, failures = [None] * len(jobs), [""] * len(jobs), {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                results[index], nodes[index] = ray.get(done[0])
            except ray.exceptions.RayError as error:
                failures[names[index]] = str(error).strip().splitlines()[-1][:300]
                continue
            on_result(index, results[index])
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): take the runs still going down too
        for reference in pending:
            ray.cancel(reference, force=True)
        raise
    if failures:
        raise TasksFailed(failures)
    return Outcome(results, nodes)


def shutdown() -> None:
    """Stop the local Ray this process started (or disconnect from a cluster)."""
    if ray_available():
        ray = _import_ray()
        if ray.is_initialized():
            ray.shutdown()
    if _OWNER:
        _OWNER.pop("release").set()
        _OWNER.pop("thread").join()
