"""Finished training runs on disk: what `qnn-train` writes and notebooks 05/06 read.

A run NAME is results/metrics/NAME.json, results/tables/NAME_history.csv,
checkpoints/NAME.pt (best-validation state_dict) and checkpoints/NAME.json (how to
rebuild the model), written together (`save_run`). While it trains, checkpoints/NAME.lock
names the process that trains it (`RunLock`).
"""
from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from . import paths
from qnnlib.provenance import provenance


def load_json(path) -> dict | None:
    """The JSON object in `path`, or None when the file does not exist (optional inputs,
    e.g. the paper-scale run that needs a GPU)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, value: dict) -> Path:
    """Write `value` as indented JSON through a uniquely named temporary file (no
    half-written file, and no two writers sharing one)."""
    os.replace(write_temporary(path, lambda file: file.write(_json_bytes(value))), path)
    return path


def load_metrics(name: str) -> dict | None:
    """results/metrics/<name>.json (as `qnn-train` writes it), or None if absent or a
    placeholder: a run that needs a GPU is committed as {"status": "pending", ...} so that
    the stages reading it can declare it as a dependency before it has been run."""
    metrics = load_json(paths.results("metrics", f"{name}.json"))
    return None if metrics is None or metrics.get("status") == "pending" else metrics


def load_run(name: str) -> dict:
    """Everything `qnn-train --out-name NAME` wrote, each part None when absent:
    {"name", "metrics" (dict), "history" (DataFrame), "model" (the build_model dict from
    checkpoints/NAME.json), "checkpoint" (Path of checkpoints/NAME.pt)}."""
    history = paths.results("tables", f"{name}_history.csv")
    description = load_json(paths.checkpoints() / f"{name}.json")
    weights = paths.checkpoints() / f"{name}.pt"
    return {"name": name, "metrics": load_metrics(name),
            "history": pd.read_csv(history) if history.is_file() else None,
            "model": description["model"] if description else None,
            "checkpoint": weights if weights.is_file() else None}


def error_pct(metrics: dict | None) -> float | None:
    """Test error in % at the best-validation epoch, from a `qnn-train` metrics dict."""
    if not metrics or metrics.get("test_error") is None:
        return None
    value = float(metrics["test_error"])
    return None if math.isnan(value) else 100 * value


def run_files(name: str) -> dict[str, Path]:
    """Where run NAME's files go (folders not created)."""
    return {"weights": paths.checkpoints() / f"{name}.pt",
            "description": paths.checkpoints() / f"{name}.json",
            "history": paths.results_dir() / "tables" / f"{name}_history.csv",
            "metrics": paths.results_dir() / "metrics" / f"{name}.json"}


def check_writable(name: str) -> None:
    """Before training: every folder run NAME writes to can be written (or created), so a
    read-only results/ fails now, with a clear message, not after hours of training.
    Nothing is left behind: a folder not there yet is checked at its nearest ancestor."""
    for folder in sorted({path.parent for path in run_files(name).values()}):
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        try:
            if not existing.is_dir():
                raise NotADirectoryError(f"{existing} is not a folder")
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise OSError(f"cannot write run {name!r}'s files in {folder}: "
                          f"{error.strerror or error}") from None


def metrics_record(result, config: dict, wall_seconds: float | None = None) -> dict:
    """The metrics of a `training.TrainResult`: errors as percentages rounded to 2
    decimals (stable under reruns on other machines, for citation) and raw; the training
    settings, and the model and data settings it was trained with (`config`)."""
    return {
        "best_epoch": result.best_epoch,
        "best_val_error_pct": round(100 * result.best_val_error, 2),
        "test_error_pct": round(100 * result.test_error, 2),
        "best_val_error": result.best_val_error,
        "test_error": result.test_error,
        "epochs": len(result.history),
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "config": result.config.to_dict(),
        "model": config.get("model"),
        "data": config.get("data"),
        "provenance": provenance(threads=result.config.threads or torch.get_num_threads(),
                                 wall_seconds=wall_seconds),
    }


def save_run(result, config: dict, name: str, wall_seconds: float | None = None) -> dict[str, Path]:
    """Write run NAME's four files together: checkpoints/NAME.pt (best-validation
    state_dict on CPU), checkpoints/NAME.json (how to rebuild the model),
    results/tables/NAME_history.csv and results/metrics/NAME.json.

    All are written to unique temporary names first, then renamed into place, metrics
    last: a failed write (a full disk, say) leaves the previous complete run, and a
    metrics file always describes the files beside it."""
    targets = run_files(name)
    state = {key: value.detach().cpu() for key, value in result.model.state_dict().items()}
    writers = {
        "weights": lambda file: torch.save(state, file),
        "description": lambda file: file.write(_json_bytes({"model": config["model"], "data": config["data"]})),
        "history": lambda file: file.write(result.history.to_csv(index=False, float_format="%.6g").encode()),
        "metrics": lambda file: file.write(_json_bytes(metrics_record(result, config, wall_seconds))),
    }
    staged = {}
    try:
        for key, write in writers.items():  # dict order: metrics last
            targets[key].parent.mkdir(parents=True, exist_ok=True)
            staged[key] = write_temporary(targets[key], write)
        for key in writers:
            os.replace(staged.pop(key), targets[key])
    finally:
        for leftover in staged.values():
            leftover.unlink(missing_ok=True)
    return targets


def _json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def write_temporary(target: Path, write) -> Path:
    """`write(file)` into a new uniquely named file beside `target` (mode 0644 less the
    umask, as other files), flushed to disk; its path."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    path = Path(name)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; results are not
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunBusy(RuntimeError):
    """Another live process is training the run of that name."""


class RunLock:
    """checkpoints/NAME.lock while run NAME trains: a second `qnn-train` of the same name
    is refused, naming the holder, instead of both writing the same files. A lock whose
    process has ended (killed, say) on this machine is taken over."""

    def __init__(self, name: str):
        self.name, self.path = name, paths.checkpoints() / f"{name}.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        for _ in range(2):
            try:
                with open(self.path, "x") as file:
                    file.write(holder + "\n")
                return self
            except FileExistsError:
                if not self._stale():
                    raise RunBusy(f"run {self.name!r} is being trained by {self._holder()} "
                                       f"(lock file {self.path}); wait for it, or give another "
                                       "--out-name") from None
                self.path.unlink(missing_ok=True)
        raise RuntimeError(f"could not take the lock file {self.path}")

    def __exit__(self, *exc_info):
        self.path.unlink(missing_ok=True)

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def _stale(self) -> bool:
        """The holder was on this machine and its process is gone."""
        words = self._holder().split()
        if len(words) < 4 or words[0] != "pid" or words[3].rstrip(",") != socket.gethostname():
            return False
        try:
            os.kill(int(words[1]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False
