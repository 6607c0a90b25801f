"""The BinaryMLP file: one uncompressed .npz (packed bits do not compress).

Arrays: `meta` (UTF-8 JSON as uint8: format, version, input_scaling, input_map,
in_features, k and units per layer), `weights{i}` (uint64 (units, ceil(k / 64))),
`thresholds{i}` (int32 (units,)) and `flip{i}` (np.packbits of the bool flips) for every
layer but the last, and the float32 output affine `out_bias`, `out_scale`, `out_shift`.

Safety. Reading never runs code from the file (object arrays, which would be unpickled,
are refused from their .npy header) and never allocates more than the file holds and its
metadata allows: the zip directory is checked first (no unknown, duplicate or compressed
members, none larger than the shape the metadata gives it), then each member's .npy
header (dtype, shape and byte count) before its data is read (`npz`). Every array is then checked
against the model's invariants (`check_model`): a truncated, hand-edited or foreign file,
or one from a newer format version, is a `DeployError` that names the problem. Writing
goes to a temporary file in the same folder, renamed over the target only once complete,
so a failed save never leaves a half-written file where a good one was.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from qnnlib.bitpack import words_for
from qnnlib.deploy import npz
from qnnlib.deploy.errors import DeployError
from qnnlib.kernels import checks

FORMAT = "qnnlib.deploy.BinaryMLP"
FORMAT_VERSION = 1
# name -> the map from uint8 pixels x to the network's training input
INPUT_SCALINGS = {"symmetric": "2*x/255 - 1"}
INT32_MIN = np.iinfo(np.int32).min
# |t| bound of the pixel layer's folded thresholds: 255 k plus the folding's search margin
PIXEL_MARGIN = 16
# The metadata is a few hundred bytes of JSON; a larger meta member is refused unread.
META_BYTES = 1 << 16

# What a damaged archive raises while it is read: zipfile refuses unknown compression
# methods (NotImplementedError) and "encrypted" members (RuntimeError), zlib bad streams.
_UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError,
               zlib.error, npz.Unreadable)
_INVALID = (KeyError, ValueError, TypeError, UnicodeDecodeError)
_META_KEYS = {"format", "version", "input_scaling", "input_map", "in_features", "k", "units"}


def write_npz(file, arrays: dict) -> None:
    """The `.npz` layout of `np.savez` with a fixed time stamp on every member, so the same
    model always gives the same bytes (a committed, citable file that reruns do not touch)."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


def save(path, layers, out_affine, in_features, input_scaling) -> None:
    """Write the model atomically: temp file in the target's folder, then os.replace."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "input_scaling": input_scaling,
            "input_map": INPUT_SCALINGS[input_scaling], "in_features": in_features,
            "k": [layer["k"] for layer in layers],
            "units": [int(layer["weights"].shape[0]) for layer in layers]}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
              **dict(zip(("out_bias", "out_scale", "out_shift"), out_affine))}
    for i, layer in enumerate(layers):
        arrays[f"weights{i}"] = layer["weights"]
        if layer["thresholds"] is not None:
            arrays[f"thresholds{i}"] = layer["thresholds"]
            arrays[f"flip{i}"] = np.packbits(layer["flip"])
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, _new_file_mode())  # mkstemp's 0600 is for secrets; a model is not one
        with os.fdopen(handle, "wb") as file:
            write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _new_file_mode() -> int:
    """0666 minus the process umask: the mode open() gives every other file we write.
    The umask can only be read by setting it, so it is set back at once."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def load(path) -> dict:
    """The keyword arguments of `BinaryMLP` from a file written by `save`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    try:
        with zipfile.ZipFile(path) as archive:
            meta, arrays = _read_arrays(archive)
        return _from_arrays(meta, arrays)
    except _UNREADABLE as err:
        raise DeployError(f"{path} is not a readable BinaryMLP file (.npz expected): {err}") from err
    except _INVALID as err:
        raise DeployError(f"{path} is not a valid BinaryMLP file: {err}") from err


def _read_arrays(archive) -> tuple[dict, dict]:
    """(meta, name -> array). Every member's name and size is checked against the metadata
    before any array is read, so a hostile member is refused without being read."""
    members = npz.members(archive)
    if "meta" not in members:
        raise ValueError("no metadata")
    npz.check_size(members["meta"], "meta", META_BYTES)
    meta = _meta(npz.read_member(archive, members.pop("meta"), "meta", np.uint8, max_bytes=META_BYTES))
    layout = _layout(meta)
    unexpected = sorted(set(members) - set(layout))
    if unexpected:
        raise ValueError(f"unexpected arrays {unexpected}")
    missing = [name for name in layout if name not in members]
    if missing:
        raise ValueError(f"missing arrays {missing}")
    for name, (dtype, shape) in layout.items():
        npz.check_size(members[name], name, math.prod(shape) * np.dtype(dtype).itemsize)
    arrays = {name: npz.read_member(archive, members[name], name, dtype, shape)
              for name, (dtype, shape) in layout.items()}
    return meta, arrays


def _layout(meta) -> dict:
    """Name -> (dtype, shape) of every array the metadata implies, in file order."""
    units, last = meta["units"], len(meta["units"]) - 1
    layout = {}
    for i, (k, width) in enumerate(zip(meta["k"], units)):
        layout[f"weights{i}"] = (np.uint64, (width, words_for(k)))
        if i < last:
            layout[f"thresholds{i}"] = (np.int32, (width,))
            layout[f"flip{i}"] = (np.uint8, ((width + 7) // 8,))
    for name in ("out_bias", "out_scale", "out_shift"):
        layout[name] = (np.float32, (units[-1],))
    return layout


def _from_arrays(meta: dict, arrays: dict) -> dict:
    """The model's keyword arguments from arrays whose dtypes and shapes match `_layout`."""
    layers, last = [], len(meta["k"]) - 1
    for i, k in enumerate(meta["k"]):
        thresholds = flip = None
        if i < last:
            units, packed = meta["units"][i], arrays[f"flip{i}"]
            thresholds = arrays[f"thresholds{i}"]
            flip = np.unpackbits(packed, count=units).astype(bool)
            if np.unpackbits(packed)[units:].any():
                raise ValueError(f"flip{i} has bits set past its {units} units")
        layers.append({"weights": arrays[f"weights{i}"], "k": k, "thresholds": thresholds,
                       "flip": flip})
    model = {"layers": layers, "out_bias": arrays["out_bias"], "out_scale": arrays["out_scale"],
             "out_shift": arrays["out_shift"], "in_features": meta["in_features"],
             "input_scaling": meta["input_scaling"]}
    check_model(**model)
    return model


def _meta(raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"meta must be 1-D uint8 (UTF-8 JSON), got {raw.dtype} {raw.shape}")
    meta = json.loads(raw.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"format is {found!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"format version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this reader's ({FORMAT_VERSION}); "
                         "upgrade qnnlib to read it")
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version} is not supported (this is {FORMAT_VERSION})")
    if set(meta) != _META_KEYS:
        raise ValueError(f"meta keys are {sorted(meta)}, expected {sorted(_META_KEYS)}")
    ks, units = meta["k"], meta["units"]
    if not (isinstance(ks, list) and isinstance(units, list) and len(ks) == len(units) >= 2
            and all(_positive_int(v) for v in ks + units) and _positive_int(meta["in_features"])):
        raise ValueError(f"meta k {ks!r} and units {units!r} must be equal-length lists (2 or "
                         f"more layers) of positive integers, in_features {meta['in_features']!r} too")
    if meta["input_scaling"] not in INPUT_SCALINGS or \
            meta["input_map"] != INPUT_SCALINGS[meta["input_scaling"]]:
        raise ValueError(f"unknown input scaling {meta['input_scaling']!r} / map {meta['input_map']!r}")
    return meta


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_model(layers, out_bias, out_scale, out_shift, in_features, input_scaling) -> None:
    """The invariants every BinaryMLP holds (ValueError naming the first one broken):
    layer sizes chain from in_features, packed weights have zero padding bits, hidden
    thresholds lie in [-k, k + 1] (pixel layer: within 255 k + margin, or INT32_MIN for a
    constant unit), and the output affine is finite float32 of the output width."""
    if input_scaling not in INPUT_SCALINGS:
        raise ValueError(f"unknown input_scaling {input_scaling!r}; known: {sorted(INPUT_SCALINGS)}")
    if len(layers) < 2:
        raise ValueError(f"a BinaryMLP has at least 2 layers, got {len(layers)}")
    fan_in = in_features
    for i, layer in enumerate(layers):
        weights, k = layer["weights"], layer["k"]
        if k != fan_in:
            raise ValueError(f"layer {i} has fan-in k={k} but the previous width is {fan_in}")
        if weights.dtype != np.uint64 or weights.ndim != 2 or weights.shape[1] != words_for(k):
            raise ValueError(f"weights{i} must be uint64 (units, {words_for(k)}), got "
                             f"{weights.dtype} {weights.shape}")
        checks.check_padding(np, f"weights{i}", weights, k)
        fan_in = weights.shape[0]
        if i < len(layers) - 1:
            _check_epilogue(i, layer, fan_in)
    for name, array in (("out_bias", out_bias), ("out_scale", out_scale), ("out_shift", out_shift)):
        if array.dtype != np.float32 or array.shape != (fan_in,) or not np.isfinite(array).all():
            raise ValueError(f"{name} must be finite float32 of shape ({fan_in},)")


def _check_epilogue(i, layer, units) -> None:
    thresholds, flip, k = layer["thresholds"], layer["flip"], layer["k"]
    if thresholds is None or thresholds.dtype != np.int32 or thresholds.shape != (units,):
        raise ValueError(f"thresholds{i} must be int32 of shape ({units},)")
    if flip is None or flip.dtype != np.bool_ or flip.shape != (units,):
        raise ValueError(f"flip{i} must be bool of shape ({units},)")
    low, high = (-k, k + 1) if i else (-255 * k - PIXEL_MARGIN, 255 * k + PIXEL_MARGIN)
    outside = (thresholds < low) | (thresholds > high)
    if i == 0:
        outside &= thresholds != INT32_MIN
    if outside.any():
        raise ValueError(f"thresholds{i} has values outside [{low}, {high}] that disagree with k={k}")
