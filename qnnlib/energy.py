"""The paper's energy accounting for one MNIST image (arXiv:1609.07061, "power
efficiency"; introduced in notebook 06_runtime_and_energy).

The paper argues with Horowitz's 45 nm energy table (ISSCC 2014) that a binarized
network (i) replaces 32-bit floating-point multiply-accumulates (MACs) with bitwise
XNOR + popcount and (ii) reads 32x fewer weight bits from memory, where memory access
costs far more than arithmetic. The paper gives the table, not a per-image number; this
module turns the table into one, with every assumption explicit and changeable.

Arithmetic (pJ per operation, `ADD_PJ`, `MULT_PJ`: Horowitz's numbers).

* float32 network: every MAC is one fp32 multiply + one fp32 add; each unit then applies
  its batch norm as one fp32 multiply + one fp32 add (the bias folded into the shift);
  the activation (hard tanh, a clamp) is not counted.
* BNN, hidden layers (±1 inputs and weights): 64 binary MACs are one 64-bit XNOR, one
  64-bit popcount and one int32 accumulate (`XNOR64_PJ`, `POPCOUNT64_PJ`,
  `ACCUMULATE_PJ`); batch norm + sign is one integer comparison per unit, counted as an
  int32 add (see `qnnlib.deploy`: BN folds into an integer threshold).
* BNN, first layer (8-bit pixels, binary weights): the paper's bit-plane sum
  s = sum_{n=1..8} 2^(n-1) (x^n . w^b): eight binary dot products per unit, each like a
  hidden layer's, 8 int32 shift-adds to combine them, and the threshold comparison.
* BNN, output layer: binary dot products, one int32 add per unit for dot = K - 2 popcount,
  then the float batch-norm affine (one fp32 multiply + one fp32 add per unit).
* Horowitz lists no XNOR or popcount, so their costs are derived from the int32 add
  (0.1 pJ for 32 full-adder bits): a 64-bit XNOR is 64 XNOR gates, each a part of one
  full adder, so at most a 64-bit add = 2 int32 adds (`XNOR64_PJ` = 0.2 pJ, an upper
  bound); a 64-bit popcount is an adder tree of 32x1 + 16x2 + 8x3 + 4x4 + 2x5 + 1x6 =
  120 full-adder bits = 120/32 int32 adds (`POPCOUNT64_PJ` = 0.375 pJ).

Memory (pJ per 64-bit access, `MEMORY_PJ_PER_64BIT`).

* Weights: at batch size B every weight (and per-unit parameter) is read once per B
  images (default B = 1: one image at a time, the embedded case the paper has in mind).
  All of a network's parameters live in one memory level, the smallest that holds them
  all (8 KB, 32 KB, 1 MB cache, else DRAM; `memory_level`). DRAM costs 1.3-2.6 nJ per
  access; the default takes the low end (1.3 nJ), which favours neither network.
* Activations: each layer reads its input vector once and writes its output once, from
  the smallest level that holds the largest activation vector of the network; the float
  network stores float32 values (the input as float32 too), the BNN 8-bit pixels and
  1-bit hidden activations, both networks float32 output scores.
* Not counted: instruction fetch, control, data movement between registers, the argmax.
"""
from __future__ import annotations

import math

import pandas as pd

__all__ = [
    "ADD_PJ", "MULT_PJ", "MEMORY_PJ_PER_64BIT", "MEMORY_CAPACITY_BYTES", "DRAM_PJ_RANGE",
    "XNOR64_PJ", "POPCOUNT64_PJ", "ACCUMULATE_PJ", "POPCOUNT64_FULL_ADDER_BITS", "NETWORKS",
    "horowitz_table", "mlp_layers", "memory_level", "count_ops", "energy_per_image",
    "energy_summary",
]

# Horowitz (ISSCC 2014), 45 nm, 0.9 V: energy per operation in pJ (paper, "Very power efficient in forward pass").
ADD_PJ = {"int8": 0.03, "int32": 0.1, "fp16": 0.4, "fp32": 0.9}
MULT_PJ = {"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7}
# Energy per 64-bit memory access in pJ; DRAM is 1.3-2.6 nJ (the low end by default).
MEMORY_PJ_PER_64BIT = {"cache_8KB": 10.0, "cache_32KB": 20.0, "cache_1MB": 100.0, "dram": 1300.0}
DRAM_PJ_RANGE = (1300.0, 2600.0)
MEMORY_CAPACITY_BYTES = {"cache_8KB": 8 * 1024, "cache_32KB": 32 * 1024,
                         "cache_1MB": 1024 * 1024, "dram": math.inf}

# Binary operations, derived from the int32 add (module docstring).
POPCOUNT64_FULL_ADDER_BITS = 32 * 1 + 16 * 2 + 8 * 3 + 4 * 4 + 2 * 5 + 1 * 6  # = 120
XNOR64_PJ = 2 * ADD_PJ["int32"]
POPCOUNT64_PJ = POPCOUNT64_FULL_ADDER_BITS / 32 * ADD_PJ["int32"]
ACCUMULATE_PJ = ADD_PJ["int32"]

NETWORKS = ("float32", "bnn")
WORD_BITS = 64
PIXEL_BITS = 8
FLOAT_BITS = 32

OP_COLUMNS = ["macs", "fp32_mult", "fp32_add", "int32_add", "xnor64", "popcount64"]


def horowitz_table() -> pd.DataFrame:
    """The Horowitz 45 nm table as the paper prints it (pJ per add and per multiply)."""
    names = {"int8": "8-bit integer", "int32": "32-bit integer", "fp16": "16-bit float",
             "fp32": "32-bit float"}
    return pd.DataFrame([{"operation": names[kind], "add_pJ": ADD_PJ[kind], "mult_pJ": MULT_PJ[kind]}
                         for kind in names])


def mlp_layers(in_features: int = 784, hidden: int = 4096, depth: int = 3,
               num_classes: int = 10) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each dense layer of `qnnlib.models.mnist_mlp`."""
    if depth < 1 or min(in_features, hidden, num_classes) < 1:
        raise ValueError("need depth >= 1 and positive layer sizes")
    sizes = [in_features] + [hidden] * depth + [num_classes]
    return list(zip(sizes[:-1], sizes[1:]))


def memory_level(nbytes: float) -> str:
    """The smallest level of `MEMORY_CAPACITY_BYTES` that holds `nbytes`."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    for level, capacity in MEMORY_CAPACITY_BYTES.items():
        if nbytes <= capacity:
            return level
    raise AssertionError("unreachable: DRAM holds everything")


def _words(k: int) -> int:
    return -(-k // WORD_BITS)


def count_ops(layers, network: str) -> pd.DataFrame:
    """Operations and bits moved per image, one row per layer (see the module docstring).

    `layers`: [(fan_in, fan_out), ...] as from `mlp_layers`; `network`: "float32" or
    "bnn". Columns: layer, kind, fan_in, fan_out, macs, fp32_mult, fp32_add, int32_add,
    xnor64, popcount64, weight_bits (the weight matrix), param_bits (per-unit batch-norm
    parameters or thresholds), input_bits, output_bits.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    layers = [(int(k), int(n)) for k, n in layers]
    if not layers or min(min(pair) for pair in layers) < 1:
        raise ValueError("layers must be a non-empty list of positive (fan_in, fan_out)")
    rows = []
    for index, (k, n) in enumerate(layers):
        first, last = index == 0, index == len(layers) - 1
        row = {"layer": index + 1, "fan_in": k, "fan_out": n, "macs": k * n,
               "fp32_mult": 0, "fp32_add": 0, "int32_add": 0, "xnor64": 0, "popcount64": 0}
        if network == "float32":
            row.update(kind="fp32", fp32_mult=k * n + n, fp32_add=k * n + n,
                       weight_bits=FLOAT_BITS * k * n, param_bits=2 * FLOAT_BITS * n,
                       input_bits=FLOAT_BITS * k, output_bits=FLOAT_BITS * n)
        else:
            words = _words(k)
            planes = PIXEL_BITS if first else 1
            word_ops = planes * words * n
            row.update(xnor64=word_ops, popcount64=word_ops, weight_bits=k * n,
                       input_bits=(PIXEL_BITS if first else 1) * k)
            if last:  # dot = K - 2 popcount, then the float batch-norm affine
                row.update(kind="binary_out", int32_add=word_ops + n, fp32_mult=n, fp32_add=n,
                           param_bits=2 * FLOAT_BITS * n, output_bits=FLOAT_BITS * n)
            else:  # accumulate, (first layer: combine 8 planes), compare with the threshold
                combine = PIXEL_BITS if first else 0
                row.update(kind="bitplane" if first else "binary",
                           int32_add=word_ops + (combine + 1) * n,
                           param_bits=FLOAT_BITS * n, output_bits=n)
        rows.append(row)
    columns = ["layer", "kind", "fan_in", "fan_out", *OP_COLUMNS, "weight_bits", "param_bits",
               "input_bits", "output_bits"]
    return pd.DataFrame(rows, columns=columns)


def energy_per_image(layers, network: str, *, batch_size: int = 1, dram_pj: float | None = None,
                     weight_memory: str | None = None,
                     activation_memory: str | None = None) -> pd.DataFrame:
    """`count_ops` plus energy in pJ per image, per layer: arithmetic_pj, weight_pj,
    activation_pj, total_pj, and the memory levels used (module docstring).

    `weight_memory` / `activation_memory` force a level of `MEMORY_PJ_PER_64BIT` instead
    of choosing by size; `dram_pj` replaces the DRAM cost (e.g. 2600 for the high end).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    costs = dict(MEMORY_PJ_PER_64BIT)
    if dram_pj is not None:
        costs["dram"] = float(dram_pj)
    ops = count_ops(layers, network)
    weight_bits = ops["weight_bits"] + ops["param_bits"]
    weight_level = weight_memory or memory_level(weight_bits.sum() / 8)
    largest_activation = max(ops["input_bits"].max(), ops["output_bits"].max())
    activation_level = activation_memory or memory_level(largest_activation / 8)
    for level in (weight_level, activation_level):
        if level not in costs:
            raise ValueError(f"unknown memory level {level!r}; known: {sorted(costs)}")
    ops["arithmetic_pj"] = (ops["fp32_mult"] * MULT_PJ["fp32"] + ops["fp32_add"] * ADD_PJ["fp32"]
                            + ops["int32_add"] * ADD_PJ["int32"] + ops["xnor64"] * XNOR64_PJ
                            + ops["popcount64"] * POPCOUNT64_PJ)
    ops["weight_memory"] = weight_level
    ops["weight_pj"] = weight_bits / WORD_BITS * costs[weight_level] / batch_size
    ops["activation_memory"] = activation_level
    ops["activation_pj"] = (ops["input_bits"] + ops["output_bits"]) / WORD_BITS * costs[activation_level]
    ops["total_pj"] = ops["arithmetic_pj"] + ops["weight_pj"] + ops["activation_pj"]
    return ops


def energy_summary(layers, **kwargs) -> pd.DataFrame:
    """One row per network ("float32", "bnn"): totals of `energy_per_image` in pJ per
    image, with the memory levels; `kwargs` go to `energy_per_image`."""
    rows = []
    for network in NETWORKS:
        table = energy_per_image(layers, network, **kwargs)
        rows.append({"network": network,
                     **{column: float(table[column].sum()) for column in
                        ("arithmetic_pj", "weight_pj", "activation_pj", "total_pj")},
                     "weight_memory": table["weight_memory"].iloc[0],
                     "activation_memory": table["activation_memory"].iloc[0],
                     "weight_bytes": float((table["weight_bits"] + table["param_bits"]).sum() / 8)})
    return pd.DataFrame(rows).set_index("network")
