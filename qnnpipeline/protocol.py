"""The training protocol of a finished run, as notebook 05 tabulates it beside the paper's.

Notebook 05_mnist_results (arXiv:1609.07061, "Benchmark results") compares the settings of each run
that `qnn-train` wrote (`runs.load_run`) with the paper's protocol: `run_settings` reads
them from the run's metrics file (its TrainConfig and model).
"""
from __future__ import annotations

from qnnlib.models import KINDS

__all__ = ["run_settings", "paper_settings", "describe", "recent_change"]


def run_settings(run: dict) -> dict:
    """The protocol knobs of a finished run (notebook 05): the TrainConfig and the model
    from its metrics file (what DVC tracks; older runs: the checkpoint description).
    A run whose model is not recorded, or of an unknown kind, is refused rather than
    described by guesses. Absent model keys take `build_model`'s defaults."""
    train = (run["metrics"] or {}).get("config", {})
    model = (run["metrics"] or {}).get("model") or run.get("model")
    name = run.get("name", "?")
    if model is None:
        raise ValueError(f"run {name!r}: its model is not recorded (no 'model' in "
                         f"results/metrics/{name}.json, no checkpoints/{name}.json): rerun it")
    if model.get("kind", "bnn") not in KINDS:
        raise ValueError(f"run {name!r}: unknown model kind {model['kind']!r}; known: {KINDS}")
    epochs = train.get("epochs")
    lr_start, lr_end = train.get("lr_start"), train.get("lr_end")
    binary = model.get("kind", "bnn") == "bnn"
    return {
        "weights / activations": "binary / binary" if binary else "float32 / hard tanh",
        "hidden units": model.get("hidden", 4096),
        "hidden layers": model.get("depth", 3),
        "dropout in / hidden": f"{model.get('dropout_in', 0.2)} / {model.get('dropout_hidden', 0.5)}",
        "training images": train.get("n_train") or 50000,
        "epochs": epochs,
        "batch size": train.get("batch_size"),
        "lr start -> end": f"{lr_start:g} -> {lr_end:g}",
        "lr factor per epoch": f"{(lr_end / lr_start) ** (1 / epochs):.4f}",
    }


def paper_settings(protocol: dict) -> dict:
    """`run_settings` of the paper's protocol (notebook 05's `paper_protocol`: hidden,
    depth, epochs, batch_size, n_train, lr_start, lr_end, dropout_in, dropout_hidden)."""
    model = {"kind": "bnn", **{key: protocol[key] for key in ("hidden", "depth", "dropout_in", "dropout_hidden")}}
    train = {key: protocol[key] for key in ("epochs", "batch_size", "n_train", "lr_start", "lr_end")}
    return run_settings({"model": model, "metrics": {"config": train}})


def describe(run: dict) -> str:
    """"BNN, 3 x 2048, 30 epochs": kind, shape and length of a finished run (notebook 05)."""
    s = run_settings(run)
    kind = "BNN" if s["weights / activations"].startswith("binary") else "full precision"
    return f"{kind}, {s['hidden layers']} x {s['hidden units']}, {s['epochs']} epochs"


def recent_change(val_errors, window: int = 3) -> float | None:
    """Has a run plateaued? Mean validation error of the last `window` epochs minus that of
    the `window` before, in the units given (notebook 05); None for runs shorter than
    2 * window. Clearly negative: the run was still improving when it stopped."""
    values = [float(v) for v in val_errors]
    if window < 1 or len(values) < 2 * window:
        return None
    last, before = values[-window:], values[-2 * window:-window]
    return sum(last) / window - sum(before) / window
