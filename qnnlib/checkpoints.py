"""Resumable training checkpoints: every piece of state, checked before it is reused.

A checkpoint holds the model, the optimizer, the best-validation snapshot, the history
and every random state (python, numpy, torch, CUDA, the shuffling generator and any
generator a module holds), so a run resumed from it ends bit-identical to one that was
never interrupted.

A resume must either continue the same computation or refuse, saying why. So each file
carries a *run signature* (`run_signature`) and is reused only when it matches:

- every config field that changes the numbers, with `device="auto"` resolved;
- the model: its parameter names and shapes and its module tree as printed (the kind of
  each layer, quantizers, bit widths, dropout rates), and the optimizer's class;
- the caller's description of the run, where it gives one (`qnn-train` gives the whole
  resolved configuration: model, data and training settings);
- a fingerprint of the training data (shapes and a hash of the values);
- the code: a hash of the qnnlib modules that compute a run (`COMPUTATION_MODULES`,
  docstrings and comments left out) and the python, torch and numpy versions. A
  checkpoint written by older code is refused rather than its old numbers reported
  as new.

Files are read with `torch.load(weights_only=True)`: tensors and plain python values
only, so loading never runs code from the file. Random states are stored in that form.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import os
import pickle
import platform
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .train_config import BOOKKEEPING_FIELDS

__all__ = ["COMPUTATION_MODULES", "code_identity", "data_fingerprint", "run_signature",
           "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint"]

# The qnnlib modules whose code decides a training run's numbers, as paths without .py
# (a test checks that the modules a run can execute import no other qnnlib module).
COMPUTATION_MODULES = ("quantize_ops", "quantizers", "layers", "models", "train_config", "determinism",
                       "checkpoints", "training", "shift", "accumulator_formats", "accumulators",
                       "experiments", "statistics", "executor", "grid_store", "numerics",
                       "ordered_linear", "ordered_matmul", "vector_ir", "xnor_forward",
                       "bitpack", "kernels/__init__", "kernels/bitplane", "kernels/checks",
                       "kernels/cpu", "kernels/layers", "kernels/nibble",
                       "gpu/__init__", "gpu/graphed_training")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=1)
def code_identity() -> dict:
    """{"qnnlib": hash of the syntax trees of COMPUTATION_MODULES (so an edit to a
    docstring or comment does not invalidate checkpoints, any code change does),
    "python", "torch", "numpy": versions}."""
    digest = hashlib.sha256()
    for name in COMPUTATION_MODULES:
        source = (Path(__file__).parent / f"{name}.py").read_text()
        digest.update(name.encode() + ast.dump(_strip_docstrings(ast.parse(source))).encode())
    return {"qnnlib": digest.hexdigest()[:16], "python": platform.python_version(),
            "torch": str(torch.__version__), "numpy": str(np.__version__)}


def data_fingerprint(data: dict) -> dict:
    """{split: [input shape, hash of inputs and labels]} of the tensors a run trains on."""
    prints = {}
    for name, (inputs, labels) in sorted(data.items()):
        digest = hashlib.blake2b(digest_size=8)
        for tensor in (inputs, labels):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        prints[name] = [list(inputs.shape), digest.hexdigest()]
    return prints


def run_signature(model: nn.Module, optimizer, config, device, data: dict | None = None,
                  identity: dict | None = None) -> dict:
    """What must match for a checkpoint to be resumed (see the module docstring).
    `config` is a `TrainConfig`; `device` the resolved device the run uses; `identity` the
    caller's whole description of the run (plain values), compared key by key."""
    numbers = {k: v for k, v in config.to_dict().items() if k not in BOOKKEEPING_FIELDS}
    numbers["device"] = str(torch.device(device))
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    return {"config": numbers, "model": {"shapes": shapes, "structure": repr(model)},
            "optimizer": type(optimizer).__name__, "run": _flatten(identity or {}),
            "data": data_fingerprint(data) if data is not None else None,
            "code": code_identity()}


def _flatten(value: dict, prefix: str = "") -> dict:
    """{"model.kind": "bnn", ...}: nested settings as dotted keys, values as text, so that
    a difference is named by its key and the signature stores as plain strings."""
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = repr(item)
    return flat


def module_generators(model: nn.Module) -> dict[str, torch.Generator]:
    """Explicit generators held by modules (stochastic binarization); their states are
    not in the state_dict but decide the draws, so checkpoints must keep them."""
    found = {}
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"{name}.{attr}"] = value
    return found


def rng_state(model: nn.Module, shuffle: torch.Generator) -> dict:
    """Every random state a run depends on (dropout draws from the global torch RNG),
    as tensors and plain values: numpy's key array becomes an int64 tensor."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "shuffle": shuffle.get_state(),
        "modules": {key: gen.get_state() for key, gen in module_generators(model).items()},
    }


def set_rng_state(state: dict, model: nn.Module, shuffle: torch.Generator) -> None:
    """Inverse of `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["key"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle.set_state(state["shuffle"])
    for key, gen in module_generators(model).items():
        gen.set_state(state["modules"][key])


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic save: a crash while writing leaves the previous checkpoint intact. The
    temporary file's name is unique, so two writers never share (or delete) one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, signature: dict) -> dict | None:
    """The saved state if `path` exists and was written by the same run (`signature`,
    from `run_signature`); None when there is no file; ValueError saying why otherwise."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f"cannot resume from {path}: it is not a file. Name a checkpoint file, "
                         "e.g. checkpoints/NAME_resume.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]  # an empty file says nothing
        raise ValueError(
            f"cannot resume from {path}: it is not a checkpoint this version can read safely "
            f"(empty, truncated, an older format, or it holds objects other than tensors and "
            f"plain values, which are never unpickled): {reason}. Delete it or "
            "choose another checkpoint path") from None
    if not isinstance(state, dict) or "signature" not in state:
        raise ValueError(
            f"cannot resume from {path}: it is not a training checkpoint (no run signature); "
            "trained weights such as qnn-train's checkpoints/NAME.pt cannot be resumed from. "
            "Choose another checkpoint path")
    differ = signature_differences(signature, state["signature"])
    if differ:
        raise ValueError(f"cannot resume from {path}: it belongs to a different run "
                         f"(differs in: {'; '.join(differ)}). Delete it or choose another "
                         "checkpoint path")
    return state


def signature_differences(expected: dict, found: dict) -> list[str]:
    """Human-readable list of what differs between two run signatures."""
    if not isinstance(found, dict) or set(found) != set(expected):
        return ["checkpoint format (written by an older version of qnnlib)"]
    differ = sorted(k for k in expected["config"]
                    if expected["config"].get(k) != found["config"].get(k))
    run_new, run_old = expected["run"], found["run"]
    differ += sorted(key for key in set(run_new) | set(run_old) if run_new.get(key) != run_old.get(key))
    labels = {"model": "model architecture", "optimizer": "optimizer",
              "data": "training data"}
    differ += [label for key, label in labels.items() if expected[key] != found[key]]
    code_new, code_old = expected["code"], found["code"]
    if code_new.get("qnnlib") != code_old.get("qnnlib"):
        differ.append("code (the qnnlib modules that compute a run changed since it was written)")
    differ += [f"{package} version ({code_old.get(package)} -> {code_new[package]})"
               for package in ("python", "torch", "numpy") if code_new[package] != code_old.get(package)]
    return differ
