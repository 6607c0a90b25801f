"""`benchmarks/gpu.py train`: the paper's MNIST protocol on a GPU, shortened to what one
device call completes (default) or the full 1000 epochs resumed call after call
(`--full`). See benchmarks/gpu.py for the commands; this module holds the training part.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from qnnlib.data import N_TRAIN

TRAIN_BUDGET_S = 480  # s of training per call: with start-up and saving, a call ends before 9.5 min
SHORT_RUN = "mnist_paper_short"  # `train` without --full: the shortened paper protocol
PROBE_EPOCHS = 3  # timed before a shortened run, to choose its epochs
SAFETY = 0.9  # of the time left, what the shortened run plans to use
DRY_EPOCHS = 3  # a dry run's shortened protocol trains at most this many epochs
DRY_MODEL = {"hidden": 48, "depth": 2}


def train(args) -> int:
    """The paper's protocol, shortened to what one device call completes (default), or the
    full 1000 epochs resumed call after call (`--full`)."""
    return train_full(args) if args.full else train_short(args)


def _qnn_train(name: str, sets: list[str], checkpoint: Path | None = None) -> int:
    from qnnpipeline import paths
    from qnnpipeline.cli import main as qnn_train

    argv = ["--config", str(paths.root() / "params.yaml"), "--section", "mnist_paper",
            "--out-name", name, *(f for s in sets for f in ("--set", s))]
    return qnn_train(argv + (["--checkpoint", str(checkpoint)] if checkpoint else []))


def _base_sets(dry_run: bool) -> list[str]:
    sets = ["train.cuda_graph=true", "train.progress=false"]
    if dry_run:
        sets += [f"model.hidden={DRY_MODEL['hidden']}", f"model.depth={DRY_MODEL['depth']}",
                 "train.n_train=300", "train.n_val=200", "train.n_test=200",
                 "train.device=cpu", "train.threads=1"]
    return sets


def train_short(args) -> int:
    """`mnist_paper` with its epochs cut to what fits in `--budget` seconds, every other
    setting the paper's, and the exponential learning-rate decay run to its end (lr_end)
    over those epochs: a shortened paper protocol, complete in one call. The epoch count
    comes from timing `PROBE_EPOCHS` epochs of the same run first (or from `--epochs`)."""
    from qnnpipeline import paths

    from qnnpipeline.params import train_section

    start = time.monotonic()
    base = _base_sets(args.dry_run)
    paper_epochs = train_section(paths.root() / "params.yaml", "mnist_paper")["train"]["epochs"]
    most = DRY_EPOCHS if args.dry_run else paper_epochs
    epochs = args.epochs
    if epochs is None:
        epoch_s = _probe_epoch_seconds(base)
        left = args.budget - (time.monotonic() - start)
        epochs = max(1, min(most, int(SAFETY * left / epoch_s)))
        print(f"probe: {epoch_s:.2f} s per epoch; {left:.0f} s left: {epochs} epochs")
    left = max(1.0, args.budget - (time.monotonic() - start))
    status = _qnn_train(SHORT_RUN, [*base, f"train.epochs={epochs}", f"train.max_seconds={left}"])
    if status:
        return status
    metrics_path = paths.results("metrics", f"{SHORT_RUN}.json")
    metrics = json.loads(metrics_path.read_text())
    metrics["protocol"] = {
        "name": "shortened paper protocol",
        "epochs": epochs, "paper_epochs": paper_epochs,
        "note": (f"the paper's MNIST protocol (3 x 4096 BNN, batch 100, Adam, LR "
                 f"{metrics['config']['lr_start']:g} decayed exponentially to "
                 f"{metrics['config']['lr_end']:g}) with {epochs} epochs instead of "
                 f"{paper_epochs}: the decay reaches lr_end at the last epoch"),
        "epochs_chosen_by": "--epochs" if args.epochs else f"a {PROBE_EPOCHS}-epoch timing probe"}
    stamp_commit(metrics)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    complete = metrics["epochs"] >= epochs
    print(f"shortened paper protocol: {metrics['epochs']} of {epochs} epochs"
          + ("" if complete else " (stopped by the budget: not the planned protocol)")
          + f"; test error {100 * metrics['test_error']:.2f} % at best-validation epoch "
          f"{metrics['best_epoch']}; packed model: {_pack_model(paths, SHORT_RUN)}")
    return 0 if complete else 1


def _probe_epoch_seconds(base: list[str]) -> float:
    """Seconds per epoch of the run itself (step, evaluation and all), timed on
    `PROBE_EPOCHS` epochs in a scratch folder; the first epoch (graph capture) is left out."""
    saved = {v: os.environ.get(v) for v in ("QNN_RESULTS_DIR", "QNN_CHECKPOINT_DIR")}
    with tempfile.TemporaryDirectory(prefix="qnn-gpu-probe-") as scratch:
        for variable, folder in (("QNN_RESULTS_DIR", "results"), ("QNN_CHECKPOINT_DIR", "checkpoints")):
            os.environ[variable] = str(Path(scratch) / folder)
        try:
            if _qnn_train("probe", [*base, f"train.epochs={PROBE_EPOCHS}"]):
                raise SystemExit("the timing probe failed")
            history = pd.read_csv(Path(scratch) / "results" / "tables" / "probe_history.csv")
        finally:
            for variable, value in saved.items():
                os.environ.pop(variable, None) if value is None else os.environ.__setitem__(variable, value)
    return float(history["seconds"].iloc[1:].max())


def stamp_commit(record: dict) -> None:
    """The commit named in QNN_SOURCE_COMMIT, where given, is the record's: a device node's
    copy of the checkout may carry no .git, or a stale one (seen: an older commit, read as
    dirty), while the command that sent the checkout knows what it sent."""
    given = os.environ.get("QNN_SOURCE_COMMIT")
    provenance_record = record.get("provenance") or {}
    if given:
        provenance_record["git_on_node"] = {key: provenance_record.get(key) for key in ("commit", "dirty")}
        provenance_record.update(commit=given, dirty=None, commit_from="QNN_SOURCE_COMMIT")


def train_full(args) -> int:
    """The full protocol (1000 epochs): stops itself before `--budget` seconds,
    checkpoints, and resumes when run again."""
    from qnnpipeline import paths

    sets = [*_base_sets(args.dry_run), *(["train.epochs=2"] if args.dry_run else []),
            f"train.max_seconds={args.budget}",
            "train.checkpoint_seconds=120"]
    status = _qnn_train("mnist_paper", sets, paths.checkpoints() / "mnist_paper_resume.pt")
    if status:
        return status
    metrics = json.loads(paths.results("metrics", "mnist_paper.json").read_text())
    done, total = metrics["epochs"], metrics["config"]["epochs"]
    history = pd.read_csv(paths.results("tables", "mnist_paper_history.csv"))
    steps = (metrics["config"]["n_train"] or N_TRAIN) // metrics["config"]["batch_size"]
    epoch_s = float(history["seconds"].median())
    print(f"median epoch {epoch_s:.2f} s: {1e3 * epoch_s / steps:.2f} ms per step, "
          "evaluation of validation and test sets included")
    packed = _pack_model(paths, "mnist_paper")
    print(f"epochs done: {done} of {total}"
          + ("" if done >= total else " - run the same command again to resume")
          + f"; packed model: {packed}")
    return 0


def _pack_model(paths, name: str) -> Path:
    """results/models/NAME_packed.npz: the trained BNN, bit-packed (BinaryMLP)."""
    from qnnlib.deploy import BinaryMLP
    from qnnlib.models import build_model
    from qnnpipeline.runs import load_json

    description = load_json(paths.checkpoints() / f"{name}.json")
    model = build_model(description["model"])
    state = torch.load(paths.checkpoints() / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    target = paths.output("models", f"{name}_packed.npz")
    BinaryMLP.from_torch(model.eval()).save(target)
    return target
