"""Hostile input to BinaryMLP: from_torch, predict, save and load.

Files: truncated at every kind of offset, garbage, pickles (with a payload that would
leave a marker file if it ever ran), hand-edited arrays and metadata, a future format
version. Saves that fail midway must leave the previous file intact.
"""
import io
import json
import os
import pickle
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hostile import expect_error, hostile_counts, tried  # noqa: F401  (autouse fixture)

from qnnlib.deploy import BinaryMLP, DeployError
from qnnlib.deploy import fileformat
from qnnlib.models import mnist_mlp


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return BinaryMLP.from_torch(mnist_mlp(hidden=70, depth=2).eval())


@pytest.fixture(scope="module")
def good_file(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "good.npz"
    engine.save(path)
    return path


def edited(good_file, tmp_path, **changes):
    """A copy of the good file with some arrays replaced (None: removed)."""
    arrays = dict(np.load(good_file))
    arrays.update(changes)
    path = tmp_path / "edited.npz"
    np.savez(path, **{name: value for name, value in arrays.items() if value is not None})
    return path


def meta_with(good_file, **changes):
    meta = json.loads(np.load(good_file)["meta"].tobytes())
    meta.update(changes)
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


class Payload:
    """Unpickling this would create a marker file: it must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_run(good_file, tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    inside = tmp_path / "inside.npz"
    arrays = dict(np.load(good_file))
    np.savez(inside, **{**arrays, "weights0": np.array([Payload(marker)], dtype=object)})
    # a bare pickle is not a zip; a pickled member is refused from its .npy header
    for path, message in ((raw, "not a readable BinaryMLP file"), (inside, "Object arrays .pickled data.")):
        expect_error("pickle file", DeployError, message, BinaryMLP.load, path)
    assert not marker.exists()


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_files_are_refused(good_file, tmp_path_factory, fraction):
    data = good_file.read_bytes()
    path = tmp_path_factory.mktemp("cut") / "cut.npz"
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_error("truncated file", DeployError, "BinaryMLP", BinaryMLP.load, path)


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, 10**9), value=st.integers(0, 255))
def test_flipped_bytes_are_refused_or_harmless(good_file, engine, tmp_path_factory, position, value):
    """One byte changed anywhere: refused, or a model whose arrays equal the original's
    (the byte sat in zip metadata that does not matter)."""
    data = bytearray(good_file.read_bytes())
    position %= len(data)
    if data[position] == value:
        value ^= 0xFF
    data[position] = value
    path = tmp_path_factory.mktemp("flip") / "flip.npz"
    path.write_bytes(bytes(data))
    try:
        loaded = BinaryMLP.load(path)
    except DeployError as err:
        assert "BinaryMLP" in str(err)
        tried("byte changed", "DeployError")
        return
    images = np.random.default_rng(position).integers(0, 256, (20, 784), dtype=np.uint8)
    ours, theirs = loaded.scores(images), engine.scores(images)
    if not np.array_equal(ours, theirs):  # a changed weight bit is a valid, different model
        assert any(not np.array_equal(a["weights"], b["weights"]) or not np.array_equal(a["thresholds"], b["thresholds"])
                   for a, b in zip(loaded.layers, engine.layers)) or \
            not np.array_equal(loaded.out_bias, engine.out_bias) or \
            not np.array_equal(loaded.out_scale, engine.out_scale) or \
            not np.array_equal(loaded.out_shift, engine.out_shift)
    tried("byte changed", "loaded, consistent")


@pytest.mark.parametrize("offset, value", [(8, 0x01), (8, 0x20), (10, 99)])
def test_damaged_zip_directory_is_refused(good_file, tmp_path, offset, value):
    """The first central-directory entry says "encrypted", "patched data" or an unknown
    compression method: zipfile raises RuntimeError / NotImplementedError, which must
    come out as a DeployError too."""
    data = bytearray(good_file.read_bytes())
    data[data.find(b"PK\x01\x02") + offset] = value
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    expect_error("damaged zip directory", DeployError, "not a readable BinaryMLP file", BinaryMLP.load, path)


def hand_edits(good_file):
    arrays = dict(np.load(good_file))
    weights1 = arrays["weights1"].copy()
    weights1[0, -1] |= np.uint64(1) << np.uint64(63)  # k = 70: a padding bit
    thresholds1 = arrays["thresholds1"].copy()
    thresholds1[3] = 10**6
    flip0 = arrays["flip0"].copy()
    flip0[-1] |= 1  # 70 units: bit 71 of the packed flips is padding
    return [
        ({"weights1": arrays["weights1"][:, :1]}, "weights1 is uint64 .* expected uint64"),
        ({"weights1": weights1}, "weights1 has nonzero padding bits"),
        ({"weights0": arrays["weights0"].astype(np.int64)}, "weights0 is int64"),
        ({"thresholds1": thresholds1}, "thresholds1 has values outside"),
        ({"thresholds1": arrays["thresholds1"][:5]}, "thresholds1 is int32 .5,."),
        ({"thresholds0": arrays["thresholds0"].astype(np.float32)}, "thresholds0 is float32"),
        ({"flip0": flip0}, "flip0 has bits set past its 70 units"),
        ({"flip1": None}, "flip1"),
        ({"out_scale": np.full_like(arrays["out_scale"], np.nan)}, "out_scale must be finite"),
        ({"extra": np.zeros(3)}, r"unexpected arrays \['extra'\]"),
        ({"meta": meta_with(good_file, version=2)}, "format version 2 is newer than this reader"),
        ({"meta": meta_with(good_file, version="1")}, "format version '1' is not a positive integer"),
        ({"meta": meta_with(good_file, format="other")}, "format is 'other'"),
        ({"meta": meta_with(good_file, units=[70, 71, 10])}, "weights1 is uint64 .70, 2., expected uint64 .71, 2."),
        ({"meta": meta_with(good_file, k=[784, 70, 71])}, "weights2|fan-in"),
        ({"meta": meta_with(good_file, k=[784, "70", 70])}, "positive integers"),
        ({"meta": meta_with(good_file, in_features=783)}, "layer 0 has fan-in k=784 but the previous width is 783"),
        ({"meta": meta_with(good_file, input_scaling="unit")}, "unknown input scaling 'unit'"),
        ({"meta": meta_with(good_file, extra=1)}, "meta keys are"),
        ({"meta": np.frombuffer(b"\xff\xfe not json", np.uint8)}, "not a valid BinaryMLP file"),
        ({"meta": np.zeros((2, 2), np.uint8)}, "meta must be 1-D uint8"),
        ({"meta": None}, "no metadata"),
    ]


def test_hand_edited_files_are_refused(good_file, tmp_path):
    for changes, message in hand_edits(good_file):
        expect_error("hand-edited file", DeployError, message, BinaryMLP.load,
                     edited(good_file, tmp_path, **changes))


def test_foreign_paths_and_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model at all")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    for path in (garbage, single, tmp_path / "missing.npz", tmp_path):
        expect_error("foreign file", DeployError, "not a readable BinaryMLP file", BinaryMLP.load, path)
    for path in (None, 3, b"\x00"):
        expect_error("bad path type", TypeError, "path must be a str or os.PathLike", BinaryMLP.load, path)


def test_a_failed_save_leaves_the_previous_file(engine, good_file, tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    target.write_bytes(good_file.read_bytes())
    before = target.read_bytes()

    def half_write(file, arrays):
        file.write(b"PK\x03\x04 half of a zip")
        raise OSError("disk full")

    monkeypatch.setattr(fileformat, "write_npz", half_write)
    with pytest.raises(OSError, match="disk full"):
        engine.save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temp file left
    assert np.array_equal(BinaryMLP.load(target).predict(np.zeros((1, 784), np.uint8)),
                          engine.predict(np.zeros((1, 784), np.uint8)))
    tried("save failing midway", "OSError, old file kept")


def test_save_refuses_bad_paths(engine, tmp_path):
    expect_error("bad save path", FileNotFoundError, "No such file", engine.save, tmp_path / "no" / "m.npz")
    expect_error("bad save path", TypeError, "path must be a str or os.PathLike", engine.save, 7)
    (tmp_path / "dir.npz").mkdir()
    expect_error("bad save path", OSError, "dir.npz", engine.save, tmp_path / "dir.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npz"]


def test_save_round_trip_is_exact(engine, tmp_path):
    engine.save(tmp_path / "m.bin")  # any name: no suffix appended
    loaded = BinaryMLP.load(tmp_path / "m.bin")
    images = np.random.default_rng(1).integers(0, 256, (50, 784), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.scores(images), engine.scores(images))
    assert os.listdir(tmp_path) == ["m.bin"]
    first = (tmp_path / "m.bin").read_bytes()
    time.sleep(2.1)  # zip time stamps have a 2 s resolution
    engine.save(tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == first, "the same model must give the same bytes"
    with np.load(tmp_path / "m.bin", allow_pickle=False) as archive:  # a standard .npz
        assert "weights0" in archive.files


def test_saved_files_get_the_usual_permissions(engine, tmp_path):
    """0666 minus the umask, like every other file the project writes (not mkstemp's 0600)."""
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        previous = os.umask(umask)
        try:
            engine.save(tmp_path / "m.npz")
        finally:
            os.umask(previous)
        assert (tmp_path / "m.npz").stat().st_mode & 0o777 == mode
    tried("save permissions", "0666 & ~umask")


# --- hostile archives: members checked from the zip directory and .npy headers -----------

MiB = 1 << 20


def npy_header(dtype, shape) -> bytes:
    """The .npy header np.save writes for an array of this dtype and shape."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def rezipped(good_file, path, members, compression=zipfile.ZIP_STORED):
    """The good file with members replaced or added: name -> iterable of byte chunks
    (written one at a time, so a test never holds a big payload in memory)."""
    with zipfile.ZipFile(good_file) as good, zipfile.ZipFile(path, "w") as out:
        for info in good.infolist():
            if info.filename not in members:
                out.writestr(info.filename, good.read(info))
        for name, chunks in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            with out.open(info, "w", force_zip64=True) as stream:
                for chunk in chunks:
                    stream.write(chunk)
    return path


def zeros(n_bytes):
    """An npy header and n_bytes of zeros, in 1 MiB chunks: a big zero array as np.savez writes it."""
    yield npy_header(np.uint8, (n_bytes,))
    for start in range(0, n_bytes, MiB):
        yield bytes(min(MiB, n_bytes - start))


def refused_with_peak(path, message):
    """BinaryMLP.load(path) must raise DeployError matching `message`; returns the peak
    bytes allocated meanwhile (tracemalloc sees NumPy's array buffers too)."""
    tracemalloc.start()
    try:
        expect_error("hostile archive", DeployError, message, BinaryMLP.load, path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_big_unknown_members_are_refused_unread(good_file, tmp_path):
    """An extra 32 MiB array, stored or as a deflated zip bomb (64 MiB of zeros in ~64 KiB),
    is refused from the zip directory: nothing near its size is ever allocated."""
    stored = rezipped(good_file, tmp_path / "stored.npz", {"padding.npy": zeros(32 * MiB)})
    assert refused_with_peak(stored, r"unexpected arrays \['padding'\]") < 4 * MiB
    bomb = rezipped(good_file, tmp_path / "bomb.npz", {"bomb.npy": zeros(64 * MiB)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2 * MiB
    assert refused_with_peak(bomb, "bomb.npy is compressed") < 4 * MiB


def test_members_larger_than_their_shape_are_refused_unread(good_file, tmp_path):
    """weights0 of the right header and shape, followed by 8 MiB more: refused from its
    declared size, before its data is read (np.load would read the array and ignore the rest)."""
    with zipfile.ZipFile(good_file) as good:
        weights0 = good.read("weights0.npy")
    padded = rezipped(good_file, tmp_path / "padded.npz", {"weights0.npy": [weights0, bytes(8 * MiB)]})
    assert refused_with_peak(padded, r"weights0 holds \d+ bytes, more than the 7280 data bytes") < 4 * MiB
    big_meta = rezipped(good_file, tmp_path / "meta.npz", {"meta.npy": zeros(MiB)})
    refused_with_peak(big_meta, r"meta holds \d+ bytes, more than the 65536 data bytes")


def test_npy_headers_claiming_huge_shapes_are_refused(good_file, tmp_path):
    """A header claiming (2**40, 13) words (8 PiB) is a DeployError, not a MemoryError: its
    shape disagrees with the metadata's, or, when the metadata agrees, with the member's size."""
    huge = [npy_header(np.uint64, (2**40, 13)), bytes(64)]
    path = rezipped(good_file, tmp_path / "huge.npz", {"weights0.npy": huge})
    refused_with_peak(path, r"weights0 is uint64 \(1099511627776, 13\), expected uint64 \(70, 13\)")
    with zipfile.ZipFile(good_file) as good:
        meta = json.loads(np.lib.format.read_array(io.BytesIO(good.read("meta.npy"))).tobytes())
    meta["units"][0] = 2**40
    text = json.dumps(meta).encode()
    agreeing = rezipped(good_file, tmp_path / "agreeing.npz",
                        {"weights0.npy": huge, "meta.npy": [npy_header(np.uint8, (len(text),)), text]})
    assert refused_with_peak(agreeing, r"weights0's header claims 114349209288704 data bytes .* "
                                       r"but the member holds 64") < 4 * MiB


def test_declared_sizes_the_file_does_not_hold_are_refused(good_file, tmp_path):
    """A zip directory entry claiming 2 GiB for a stored member of a small file."""
    data = bytearray(good_file.read_bytes())
    entry = data.find(b"PK\x01\x02")  # first central-directory entry: sizes at +20 and +24
    data[entry + 20:entry + 28] = (2**31).to_bytes(4, "little") * 2
    path = tmp_path / "claims.npz"
    path.write_bytes(bytes(data))
    refused_with_peak(path, r"declares 2147483648 bytes, which the \d+-byte file does not hold")


# --- models ------------------------------------------------------------------------------

def broken_models():
    def with_bn(change):
        torch.manual_seed(0)
        model = mnist_mlp(hidden=16, depth=1).eval()
        with torch.no_grad():
            change(model[2])  # the first batch norm
        return model

    def with_linear(change):
        torch.manual_seed(0)
        model = mnist_mlp(hidden=16, depth=1).eval()
        with torch.no_grad():
            change(model[1])
        return model

    return [
        (with_bn(lambda bn: bn.running_mean.fill_(float("nan"))), "running_mean contains NaN"),
        (with_bn(lambda bn: bn.running_var.fill_(-1.0)), "running_var >= 0"),
        (with_bn(lambda bn: bn.weight.fill_(float("inf"))), "weight contains NaN or infinity"),
        (with_bn(lambda bn: bn.bias.fill_(float("-inf"))), "bias contains NaN or infinity"),
        (with_linear(lambda linear: linear.weight.fill_(float("nan"))), "layer weights contain NaN"),
        (with_linear(lambda linear: linear.bias.fill_(float("inf"))), "layer bias contains NaN"),
        (torch.nn.Linear(784, 10), "expected the nn.Sequential"),
        ("not a model", "model must be a torch nn.Module"),
        (torch.nn.Sequential(), r"got \[\]"),
        (torch.nn.Sequential(*mnist_mlp(hidden=16, depth=2)[:5], *mnist_mlp(hidden=8, depth=1)[5:]),
         "layer fan-in 8 != previous width 16"),
    ]


def test_broken_models_are_refused():
    for model, message in broken_models():
        expect_error("model not a binary MLP", DeployError, message, BinaryMLP.from_torch, model)
    for scaling in ("unit", None, ["symmetric"]):
        expect_error("bad input_scaling", DeployError, "unknown input_scaling", BinaryMLP.from_torch,
                     mnist_mlp(hidden=16, depth=1), input_scaling=scaling)


@pytest.mark.parametrize("images, error, match", [
    (np.zeros((2, 784), np.float32), TypeError, "raw uint8 pixels"),
    (np.zeros((2, 784), np.int16), TypeError, "raw uint8 pixels"),
    (np.zeros((2, 784), bool), TypeError, "raw uint8 pixels"),
    (np.full((2, 784), np.nan), TypeError, "raw uint8 pixels"),
    ([[0] * 784], TypeError, "NumPy array or torch tensor"),
    (np.zeros(784, np.uint8), ValueError, "images must have shape"),
    (np.zeros((2, 28, 27), np.uint8), ValueError, "images must have shape"),
    (np.zeros((2, 1, 28, 28), np.uint8), ValueError, "images must have shape"),
    (np.zeros((2, 0), np.uint8), ValueError, "images must have shape"),
])
def test_predict_refuses(engine, images, error, match):
    expect_error("predict bad images", error, match, engine.predict, images)


def test_predict_on_empty_and_strided_batches(engine):
    assert engine.predict(np.zeros((0, 784), np.uint8)).shape == (0,)
    images = np.random.default_rng(2).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    strided = np.stack([images, images], axis=-1)[..., 0]  # the same pixels, every other byte
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(engine.predict(strided), engine.predict(images))
    np.testing.assert_array_equal(engine.predict(torch.from_numpy(images).transpose(1, 2).transpose(1, 2)),
                                  engine.predict(images))
    tried("predict empty/strided", "exact")


def test_threads_are_checked(engine):
    for value, error in ((0, ValueError), (-1, ValueError), ("2", TypeError)):
        with pytest.raises(error, match="threads must be"):
            engine.threads = value
        tried("bad threads", error.__name__)
