"""The validation-only search behind the CPU-budget settings of `params.yaml: mnist_cpu`.

    python scripts/budget_search.py            # about 25 min on 2 quiet cores

Trains each candidate BNN (seed 0, one thread each, two at a time) and writes
results/search/mnist_budget_search.csv: validation and training error per epoch. The
test set is not read for the choice (`train` evaluates it, the CSV leaves it out).
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

from qnnlib.data import load_mnist
from qnnlib.experiments import seeded_model
from qnnlib.training import TrainConfig, train

CANDIDATES = {  # name: (model, train) overrides of a 3 x 1024 BNN, paper protocol otherwise
    "paper dropout, lr 1e-3": ({}, {"lr_start": 1e-3, "lr_end": 1e-5}),
    "paper dropout, lr 3e-3": ({}, {"lr_start": 3e-3, "lr_end": 3e-5}),
    "paper dropout, lr 1e-2": ({}, {"lr_start": 1e-2, "lr_end": 1e-4}),
    "dropout 0 / 0.2, lr 3e-3": ({"dropout_in": 0.0, "dropout_hidden": 0.2},
                                 {"lr_start": 3e-3, "lr_end": 3e-5}),
}
BASE_MODEL = {"kind": "bnn", "hidden": 1024, "depth": 3, "dropout_in": 0.2, "dropout_hidden": 0.5}
BASE_TRAIN = {"epochs": 15, "batch_size": 100, "seed": 0, "threads": 1, "progress": False}


def run(name: str) -> pd.DataFrame:
    model_overrides, train_overrides = CANDIDATES[name]
    torch.set_num_threads(1)
    model = seeded_model({**BASE_MODEL, **model_overrides}, BASE_TRAIN["seed"])
    result = train(model, load_mnist(root="data"), TrainConfig.from_dict({**BASE_TRAIN, **train_overrides}))
    history = result.history[["epoch", "lr", "train_error", "val_error"]]
    return history.assign(candidate=name, **{**BASE_MODEL, **model_overrides})


def main() -> int:
    with ProcessPoolExecutor(2) as pool:
        table = pd.concat(pool.map(run, CANDIDATES), ignore_index=True)
    out = Path("results/search/mnist_budget_search.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    print(table.groupby("candidate", sort=False)["val_error"].min().mul(100).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
