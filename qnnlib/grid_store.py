"""Finished runs of an experiment grid, kept on disk so that a rerun trains only the rest.

Introduced with `experiments.run_grid` (notebook 01). A run is stored under a key that
hashes everything that decides its numbers: the configuration (callables by their
qualified name and source), the shared training settings, the seed, the callables that
wrap the run, the training data and the code (`checkpoints.code_identity`). Change any of
them and the key changes: the run trains again.

Each run is one JSON file, `<key>.json`: its row and its history, floats written exactly
(JSON keeps every bit of a float64). Plain data only: reading a stored run never runs code.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from .checkpoints import code_identity

__all__ = ["run_key", "data_digest", "load_run", "save_run"]


def describe(value) -> object:
    """A stable, plain description of a configuration value (callables by name and source)."""
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func), "args": describe(value.args),
                "keywords": describe(value.keywords)}
    if callable(value):
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        return {"callable": name, "source": hashlib.sha256(source.encode()).hexdigest()[:16]}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def data_digest(splits: dict) -> str:
    """A hash of the inputs and labels of every split (tensors, or objects holding
    `images` and `labels`, as `load_mnist` returns)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(splits):
        split = splits[name]
        tensors = split if isinstance(split, (tuple, list)) else (split.images, split.labels)
        for tensor in tensors:
            tensor = torch.as_tensor(tensor).detach().cpu().contiguous()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def run_key(config: dict, seed: int, shared: dict, wrappers: dict, data: str) -> str:
    """The key of one run of a grid (see the module docstring)."""
    record = {"config": describe(config), "seed": int(seed), "shared": describe(shared),
              "wrappers": describe(wrappers), "data": data, "code": code_identity()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def save_run(store: Path, key: str, row: dict, history: pd.DataFrame) -> Path:
    """Write one finished run atomically (a unique temporary file, then a rename)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    record = {"row": row, "columns": list(history.columns),
              "data": [list(values) for values in history.itertuples(index=False)]}
    handle, temporary = tempfile.mkstemp(dir=store, prefix=f".{key}.", suffix=".tmp")
    with os.fdopen(handle, "w") as file:
        json.dump(record, file, default=_plain)
    os.replace(temporary, store / f"{key}.json")
    return store / f"{key}.json"


def load_run(store: Path | None, key: str) -> tuple[dict, pd.DataFrame] | None:
    """The stored run, or None when there is none (or it cannot be read: then it trains again)."""
    path = Path(store) / f"{key}.json" if store else None
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        history = pd.DataFrame(record["data"], columns=record["columns"])
        return record["row"], history
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _plain(value):
    """numpy scalars (pandas rows hold them) as python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a grid run")
