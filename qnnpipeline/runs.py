"""Finished training runs on disk: what `qnn-train` writes and notebooks 05/06 read.

A run NAME is results/metrics/NAME.json, results/tables/NAME_history.csv,
checkpoints/NAME.pt (best-validation state_dict) and checkpoints/NAME.json (how to
rebuild the model).
"""
from __future__ import annotations

import json
import math
import os
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
    """Write `value` as indented JSON through a temporary file (no half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)
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


def save_results(result, name: str, wall_seconds: float | None = None) -> dict[str, Path]:
    """Write results/metrics/<name>.json and results/tables/<name>_history.csv for a
    `training.TrainResult`.

    Errors appear twice: as percentages rounded to 2 decimals (stable under reruns on
    other machines for citation) and raw."""
    metrics = {
        "best_epoch": result.best_epoch,
        "best_val_error_pct": round(100 * result.best_val_error, 2),
        "test_error_pct": round(100 * result.test_error, 2),
        "best_val_error": result.best_val_error,
        "test_error": result.test_error,
        "epochs": len(result.history),
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "config": result.config.to_dict(),
        "provenance": provenance(threads=result.config.threads or torch.get_num_threads(),
                                 wall_seconds=wall_seconds),
    }
    metrics_path = write_json(paths.output("metrics", f"{name}.json"), metrics)
    history_path = paths.output("tables", f"{name}_history.csv")
    result.history.to_csv(history_path, index=False, float_format="%.6g")
    return {"metrics": metrics_path, "history": history_path}


def save_model(model: torch.nn.Module, config: dict, name: str) -> tuple[Path, Path]:
    """checkpoints/NAME.pt (state_dict on CPU) and checkpoints/NAME.json (how to rebuild it),
    each written through a temporary file."""
    folder = paths.checkpoints()
    folder.mkdir(parents=True, exist_ok=True)
    weights, description = folder / f"{name}.pt", folder / f"{name}.json"
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, weights)
    write_json(description, {"model": config["model"], "data": config["data"]})
    return weights, description
