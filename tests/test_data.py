"""qnnlib.data: the paper's MNIST splits, checksum verification, mirror and download paths.

Real data comes from the shared offline mirror (QNN_DATA_MIRROR, else ../shared/datasets
beside the checkout) and is loaded once per session; every other test starts from copies.
The network is never touched: torchvision's downloader is replaced in every test.
"""
from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.mnist as tv_mnist
from torchvision.datasets.utils import extract_archive

from qnnlib import data
from qnnpipeline import paths
from qnnlib.data import DataError, Split, load_mnist, scale_inputs

NAMES = [spec.name for spec in data.IDX_FILES]
# Well-known first labels of the official files: catches a split taken from the wrong end.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def find_mnist_archives() -> Path | None:
    """The shared mirror's folder holding the four MNIST .gz files, or None."""
    mirror = os.environ.get("QNN_DATA_MIRROR") or paths.root().parent / "shared" / "datasets"
    for folder in (Path(mirror) / "mnist", Path(mirror)):
        if all((folder / f"{name}.gz").is_file() for name in NAMES):
            return folder
    return None


ARCHIVES = find_mnist_archives()
needs_mirror = pytest.mark.skipif(ARCHIVES is None, reason="shared MNIST mirror not found")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No env mirror, no system Fashion-MNIST, and a downloader that fails like a dead network."""
    monkeypatch.delenv("QNN_DATA_MIRROR", raising=False)
    monkeypatch.setattr(data, "SYSTEM_FASHION_MIRROR", Path("/nonexistent-qnn-fashion-mirror"))

    def no_network(url, *args, **kwargs):
        raise URLError(f"network disabled in tests: {url}")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", no_network)


@pytest.fixture(scope="session")
def loaded(tmp_path_factory):
    """(root, splits) after one real load from the shared mirror into a fresh root."""
    if ARCHIVES is None:
        pytest.skip("shared MNIST mirror not found")
    root = tmp_path_factory.mktemp("mnist-root")
    return root, load_mnist(root=root, mirror=ARCHIVES.parent, download=False)


def raw_of(root: Path, folder: str = "MNIST") -> Path:
    return root / folder / "raw"


def seeded_root(tmp_path: Path, loaded_root: Path, leave_out=()) -> Path:
    """A new root holding copies of the verified files, except those named in `leave_out`."""
    root = tmp_path / "root"
    raw_of(root).mkdir(parents=True)
    for name in NAMES:
        if name not in leave_out:
            shutil.copyfile(raw_of(loaded_root) / name, raw_of(root) / name)
    return root


def copy_mirror(tmp_path: Path, names=NAMES) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in names:
        shutil.copyfile(ARCHIVES / f"{name}.gz", mirror / f"{name}.gz")
    return mirror


def flip_byte(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed or finished load must not leave behind."""
    return [p.name for p in folder.rglob(".*")]


# --- scaling ------------------------------------------------------------------------------


def test_scale_inputs_is_the_papers_map_onto_minus_one_one():
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(1, 4, 4)[:, :28, :28]
    scaled = scale_inputs(pixels)
    assert scaled.dtype == torch.float32 and scaled.shape == (1, 784)
    expected = 2 * pixels.reshape(1, 784).double() / 255 - 1
    torch.testing.assert_close(scaled.double(), expected, rtol=0, atol=1e-7)
    extremes = torch.tensor([[0, 255]], dtype=torch.uint8).repeat(1, 392)
    assert scale_inputs(extremes).unique().tolist() == [-1.0, 1.0]


def test_scale_inputs_refuses_non_uint8_input():
    with pytest.raises(TypeError, match="uint8"):
        scale_inputs(torch.zeros(2, 28, 28))


# --- loading real MNIST -----------------------------------------------------------------------


@needs_mirror
def test_load_gives_the_papers_splits(loaded):
    _, splits = loaded
    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"train": 50_000, "val": 10_000, "test": 10_000}
    for split in splits.values():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
        assert split.labels.min() == 0 and split.labels.max() == 9
        assert split.images.max() == 255
    assert splits["train"].labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert splits["test"].labels[:10].tolist() == FIRST_TEST_LABELS


@needs_mirror
def test_val_is_the_tail_of_the_official_training_file(loaded):
    root, splits = loaded
    raw = np.frombuffer((raw_of(root) / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    official = torch.from_numpy(raw.reshape(60_000, 28, 28).copy())
    assert torch.equal(splits["train"].images, official[:50_000])
    assert torch.equal(splits["val"].images, official[50_000:])


@needs_mirror
def test_inputs_are_scaled_into_minus_one_one(loaded):
    _, splits = loaded
    split = splits["val"]
    inputs = split.inputs()
    assert inputs.dtype == torch.float32 and inputs.shape == (10_000, 784)
    assert inputs.min() == -1.0 and inputs.max() == 1.0
    expected = 2 * split.images.reshape(-1, 784).double() / 255 - 1
    torch.testing.assert_close(inputs.double(), expected, rtol=0, atol=1e-7)


@needs_mirror
def test_second_load_uses_the_cached_files(loaded, monkeypatch):
    root, splits = loaded
    stamps = {name: (raw_of(root) / name).stat().st_mtime_ns for name in NAMES}

    def must_not_install(*args, **kwargs):
        raise AssertionError("cached files should have been used")

    monkeypatch.setattr(data, "install_from_archive", must_not_install)
    again = load_mnist(root=root, mirror=None, download=False)
    assert torch.equal(again["test"].images, splits["test"].images)
    assert {name: (raw_of(root) / name).stat().st_mtime_ns for name in NAMES} == stamps
    assert leftovers(root) == []


@needs_mirror
def test_root_is_readable_by_torchvision(loaded):
    root, splits = loaded
    test_set = tv_mnist.MNIST(root, train=False, download=False)
    assert torch.equal(test_set.data, splits["test"].images)


@needs_mirror
def test_dataset_summary_counts_every_example(loaded):
    _, splits = loaded
    summary = data.dataset_summary(splits)
    assert summary["split"].tolist() == ["train", "val", "test"]
    classes = [str(c) for c in range(10)]
    assert (summary[classes].sum(axis=1) == summary["n"]).all()
    assert summary.loc[summary.split == "test", "1"].item() == 1135  # the well-known test count of ones


def test_unknown_dataset_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="kmnist"):
        load_mnist("kmnist", root=tmp_path)


# --- damaged mirrors ---------------------------------------------------------------------------


@needs_mirror
def test_mirror_archive_with_flipped_byte_is_refused(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0], leave_out=["t10k-labels-idx1-ubyte"])
    mirror = copy_mirror(tmp_path, ["t10k-labels-idx1-ubyte"])
    archive = mirror / "t10k-labels-idx1-ubyte.gz"
    flip_byte(archive, archive.stat().st_size // 2)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(root=root, mirror=mirror, download=False)
    assert not (raw_of(root) / "t10k-labels-idx1-ubyte").exists()
    assert leftovers(root) == []


@needs_mirror
def test_truncated_mirror_archive_is_refused(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0], leave_out=["train-labels-idx1-ubyte"])
    mirror = copy_mirror(tmp_path, ["train-labels-idx1-ubyte"])
    archive = mirror / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is truncated"):
        load_mnist(root=root, mirror=mirror, download=False)
    assert sorted(p.name for p in raw_of(root).iterdir()) == sorted(set(NAMES) - {"train-labels-idx1-ubyte"})


@needs_mirror
def test_archive_missing_from_mirror_without_download(tmp_path):
    mirror = copy_mirror(tmp_path, [name for name in NAMES if name != "t10k-images-idx3-ubyte"])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist(root=tmp_path / "root", mirror=mirror, download=False)


@needs_mirror
def test_well_formed_archive_with_wrong_content_fails_the_checksum(tmp_path, loaded):
    name = "t10k-labels-idx1-ubyte"
    root = seeded_root(tmp_path, loaded[0], leave_out=[name])
    content = bytearray((raw_of(loaded[0]) / name).read_bytes())
    content[-1] = (content[-1] + 1) % 10  # still a valid label: only the checksum can tell
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{name}.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError) as caught:
        load_mnist(root=root, mirror=mirror, download=False)
    message = str(caught.value)
    assert f"{name}.gz" in message and data.MNIST_IDX_MD5[name] in message
    assert data.md5_of(bytes(content)) in message
    assert not (raw_of(root) / name).exists() and leftovers(root) == []


@needs_mirror
def test_mirror_whose_md5sums_disagree_is_refused(tmp_path):
    mirror = copy_mirror(tmp_path, ["t10k-labels-idx1-ubyte"])
    (mirror / "MD5SUMS").write_text("0123456789abcdef0123456789abcdef  t10k-labels-idx1-ubyte\n")
    with pytest.raises(DataError, match="MD5SUMS"):
        load_mnist(root=tmp_path / "root", mirror=mirror, download=False)


@needs_mirror
def test_shared_mirror_md5sums_agree_with_the_published_table():
    lines = (ARCHIVES / "MD5SUMS").read_text().splitlines()
    listed = {name: md5 for md5, name in (line.split() for line in lines if line.strip())}
    assert listed == data.MNIST_IDX_MD5


# --- damaged files already in root ------------------------------------------------------------


@needs_mirror
def test_corrupt_file_in_root_is_reported_and_left_untouched(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0])
    damaged = raw_of(root) / "t10k-images-idx3-ubyte"
    flip_byte(damaged, 5000)  # a pixel: the header stays valid, only the checksum can tell
    before = damaged.read_bytes()
    with pytest.raises(DataError, match="(?s)t10k-images-idx3-ubyte: checksum mismatch.*Delete it"):
        load_mnist(root=root, mirror=ARCHIVES, download=True)  # a good mirror must not replace it
    assert damaged.read_bytes() == before


@needs_mirror
def test_truncated_file_in_root_is_reported_and_left_untouched(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0])
    damaged = raw_of(root) / "train-images-idx3-ubyte"
    with open(damaged, "r+b") as handle:
        handle.truncate(1_000_000)
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_mnist(root=root, mirror=ARCHIVES, download=False)
    assert damaged.stat().st_size == 1_000_000


def test_no_mirror_and_no_download_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="(?s)train-images-idx3-ubyte is missing.*QNN_DATA_MIRROR"):
        load_mnist(root=tmp_path, download=False)


# --- downloading through torchvision ----------------------------------------------------------


def serve_from(folder: Path, requested: list[str]):
    """Stand-in for torchvision's download_and_extract_archive that copies from `folder`."""

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        requested.append(url)
        os.makedirs(download_root, exist_ok=True)
        target = os.path.join(download_root, filename)
        shutil.copyfile(folder / filename, target)
        extract_archive(target, download_root)

    return fake_download


@needs_mirror
def test_download_goes_through_torchvision_and_installs_verified_files(tmp_path, loaded, monkeypatch):
    requested = []
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", serve_from(ARCHIVES, requested))
    root = seeded_root(tmp_path, loaded[0], leave_out=["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    kept = (raw_of(root) / "train-labels-idx1-ubyte").stat().st_ino
    splits = load_mnist(root=root, mirror=None, download=True)
    assert sorted(url.rsplit("/", 1)[1] for url in requested) == sorted(f"{name}.gz" for name in NAMES)
    assert torch.equal(splits["test"].images, loaded[1]["test"].images)
    assert (raw_of(root) / "train-labels-idx1-ubyte").stat().st_ino == kept  # good files are not rewritten
    assert leftovers(root) == []


def test_failed_download_is_a_data_error_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="(?s)Downloading mnist.*train-images-idx3-ubyte"):
        load_mnist(root=tmp_path, download=True)
    assert list(raw_of(tmp_path).iterdir()) == [] and leftovers(tmp_path) == []


@needs_mirror
def test_download_with_damaged_content_installs_nothing(tmp_path, monkeypatch):
    served = copy_mirror(tmp_path)
    labels = served / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-1]))
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", serve_from(served, []))
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated"):
        load_mnist(root=root, download=True)
    assert "t10k-labels-idx1-ubyte" not in [p.name for p in raw_of(root).iterdir()]
    assert leftovers(root) == []


# --- Fashion-MNIST (synthetic files: no copy of the real set is available offline) -------------


@pytest.fixture(scope="session")
def fake_fashion(tmp_path_factory):
    """Folder of well-formed Fashion-MNIST-shaped .gz archives that are not the originals."""
    folder = tmp_path_factory.mktemp("mirror") / "fashion-mnist"
    folder.mkdir()
    for spec in data.IDX_FILES:
        header = (spec.magic).to_bytes(4, "big") + spec.count.to_bytes(4, "big")
        if spec.is_images:
            header += (28).to_bytes(4, "big") * 2
            body = np.zeros((spec.count, 28 * 28), np.uint8)
            body[:, 0] = np.arange(spec.count) % 256
        else:
            body = (np.arange(spec.count) % 10).astype(np.uint8)
        (folder / f"{spec.name}.gz").write_bytes(gzip.compress(header + body.tobytes(), compresslevel=1))
    return folder


def test_fashion_loads_from_the_system_folder_with_a_warning(tmp_path, fake_fashion, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_FASHION_MIRROR", fake_fashion)
    with pytest.warns(UserWarning, match="checked structurally only"):
        splits = load_mnist("fashion-mnist", root=tmp_path, download=False)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert splits["val"].labels[:3].tolist() == [0, 1, 2]  # 50000 % 10 == 0
    assert splits["val"].images[1, 0, 0].item() == 50_001 % 256
    assert sorted(p.name for p in raw_of(tmp_path, "FashionMNIST").iterdir()) == sorted(NAMES)


def test_fashion_original_archives_pass_without_a_warning(tmp_path, fake_fashion, monkeypatch):
    # Pretend our synthetic archives are the published ones to exercise the matching branch.
    published = {p.name: data.md5_of(p.read_bytes()) for p in fake_fashion.iterdir()}
    monkeypatch.setattr(data, "FASHION_GZ_MD5", published)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mnist("fashion-mnist", root=tmp_path, mirror=fake_fashion.parent, download=False)


@needs_mirror
def test_fashion_refuses_mnist_files(tmp_path):
    with pytest.raises(DataError, match="MNIST digits, not Fashion-MNIST"), pytest.warns(UserWarning):
        load_mnist("fashion-mnist", root=tmp_path, mirror=ARCHIVES, download=False)


# --- strict IDX checks ---------------------------------------------------------------------------


def labels_file(magic=2049, count=10_000, body=b"\x03" * 10_000) -> bytes:
    return magic.to_bytes(4, "big") + count.to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "content, problem",
    [
        (labels_file(), None),
        (b"\x00\x00", "shorter than the 8-byte IDX header"),
        (labels_file(magic=2051), "magic number 2051"),
        (labels_file(count=9_999), "9999 items"),
        (labels_file(body=b"\x03" * 9_999), "truncated: 10007 bytes"),
        (labels_file(body=b"\x03" * 10_001), "too long"),
        (labels_file(body=b"\x03" * 9_999 + b"\x0a"), "label out of range"),
    ],
)
def test_idx_labels_check_is_strict(content, problem):
    found = data.idx_problem(content, data.TEST_LABELS)
    assert found == problem if problem is None else problem in found


def test_idx_images_check_rejects_wrong_image_size():
    header = (2051).to_bytes(4, "big") + (10_000).to_bytes(4, "big") + (32).to_bytes(4, "big") * 2
    assert "32x32 images" in data.idx_problem(header + bytes(10_000 * 1024), data.TEST_IMAGES)


def test_split_len_and_inputs():
    split = Split(torch.full((3, 28, 28), 255, dtype=torch.uint8), torch.tensor([1, 2, 3]))
    assert len(split) == 3 and split.inputs().shape == (3, 784) and split.inputs().eq(1).all()
