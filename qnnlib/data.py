"""MNIST and Fashion-MNIST as verified uint8 tensors, split the way the paper splits them.

Files live in torchvision's layout (``<root>/MNIST/raw/train-images-idx3-ubyte``, and
``FashionMNIST/raw`` for Fashion-MNIST), so a folder torchvision already filled is reused.
Each of the four IDX files comes, in order of preference, from that folder, from a local
mirror of the ``.gz`` archives (``QNN_DATA_MIRROR``), or from the internet through
torchvision. Every file is checked before it is used and before it is moved into place:

* MNIST: MD5 of the *decompressed* IDX content against the published table. Archive
  checksums are not used, because mirrors (ours included) may hold re-compressed archives
  whose bytes differ while their content is identical.
* Fashion-MNIST: Zalando publishes MD5s of the ``.gz`` archives only, so an archive is
  checked against them, and a re-compressed one (wrong archive MD5) is accepted with a
  warning. Every file also gets a strict IDX header, size and label-range check, gzip's
  CRC-32 catches damaged archives, and MNIST files posing as Fashion-MNIST are refused.

A file already in ``root`` that fails its check is never replaced: the error tells the user
to delete it, so nothing they put there disappears silently. New files are decompressed
into a temporary file next to their destination, checked, then renamed into place
atomically, so a crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10
N_TRAIN = 50_000  # the authors' code trains on [0, 50000) and validates on [50000, 60000)

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # name -> torchvision class/folder
SYSTEM_FASHION_MIRROR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist

# Published MD5s of the decompressed MNIST IDX files (yann.lecun.com/exdb/mnist).
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Published MD5s of the Fashion-MNIST .gz archives (zalandoresearch/fashion-mnist README).
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

ROOT_ADVICE = "Delete it and rerun to fetch it again (nothing else is lost)."
MIRROR_ADVICE = (
    "Replace it with the original file, or point QNN_DATA_MIRROR at a folder holding the "
    "original IDX .gz files (unset it to download instead)."
)
DOWNLOAD_ADVICE = (
    "Rerun to download again, or point QNN_DATA_MIRROR at a folder holding the original "
    "IDX .gz files."
)


class DataError(RuntimeError):
    """A data file is missing, truncated or corrupt; the message names it and says what to do."""


@dataclass(frozen=True)
class IdxSpec:
    """What one IDX file must contain: its magic number and item count."""

    name: str
    count: int

    @property
    def is_images(self) -> bool:
        return "images" in self.name

    @property
    def magic(self) -> int:
        return 2051 if self.is_images else 2049  # 0x0803: 3-D uint8, 0x0801: 1-D uint8

    @property
    def header_bytes(self) -> int:
        return 16 if self.is_images else 8

    @property
    def size(self) -> int:
        return self.header_bytes + self.count * (N_PIXELS if self.is_images else 1)


TRAIN_IMAGES = IdxSpec("train-images-idx3-ubyte", 60_000)
TRAIN_LABELS = IdxSpec("train-labels-idx1-ubyte", 60_000)
TEST_IMAGES = IdxSpec("t10k-images-idx3-ubyte", 10_000)
TEST_LABELS = IdxSpec("t10k-labels-idx1-ubyte", 10_000)
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)  # load_mnist unpacks in this order


def scale_inputs(images_uint8) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 784) -> float32 (N, 784) in [-1, 1], as 2*x/255 - 1.

    The paper's scaling; the deploy engine's 8-bit first layer relies on this exact map, so
    anything but uint8 is refused rather than scaled a second time.
    """
    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8:
        raise TypeError(f"scale_inputs expects uint8 pixels, got {images.dtype}")
    pixels = images.reshape(-1, N_PIXELS).to(torch.float32)
    return 2 * pixels / 255 - 1


@dataclass
class Split:
    """One split: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def inputs(self) -> torch.Tensor:
        """Network inputs: float32 (N, 784) in [-1, 1] (see `scale_inputs`)."""
        return scale_inputs(self.images)

    def __len__(self) -> int:
        return len(self.labels)


def load_mnist(dataset: str = "mnist", root=None, mirror=None, download: bool = True) -> dict[str, Split]:
    """Return {"train": first 50k, "val": 50k..60k, "test": official 10k} of `dataset`.

    dataset: "mnist" or "fashion-mnist". root: data folder (default: env QNN_DATA_DIR, else `data/` in the working directory).
    mirror: folder of the original ``.gz`` archives, directly or in a subfolder named after
    the dataset (default: env QNN_DATA_MIRROR; for Fashion-MNIST also the Debian package's
    folder). download: fetch through torchvision what neither root nor mirror holds.
    Raises DataError for missing or damaged files, ValueError for an unknown dataset.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    raw = Path(root if root is not None else os.environ.get("QNN_DATA_DIR", "data")) / DATASETS[dataset] / "raw"
    ensure_files(raw, dataset, mirror, download)
    train_images, train_labels, test_images, test_labels = (read_idx(raw / s.name, s) for s in IDX_FILES)
    return {
        "train": Split(train_images[:N_TRAIN], train_labels[:N_TRAIN]),
        "val": Split(train_images[N_TRAIN:], train_labels[N_TRAIN:]),
        "test": Split(test_images, test_labels),
    }


def dataset_summary(splits: dict[str, Split]):
    """pandas DataFrame with one row per split: split, n, and the count of each class "0".."9"."""
    import pandas as pd  # only notebooks need it; keep `import qnnlib.data` light

    rows = []
    for name, split in splits.items():
        counts = torch.bincount(split.labels, minlength=N_CLASSES).tolist()
        rows.append({"split": name, "n": len(split), **{str(c): n for c, n in enumerate(counts)}})
    return pd.DataFrame(rows)


# --- making sure the four IDX files are in place -------------------------------------------


def ensure_files(raw: Path, dataset: str, mirror=None, download: bool = True) -> None:
    """Put every verified IDX file into `raw`, from the mirror or a download; never overwrite."""
    raw.mkdir(parents=True, exist_ok=True)
    # Check every file already in place first, so a corrupt one stops us before we write.
    missing = [spec for spec in IDX_FILES if not is_cached(raw / spec.name, spec, dataset)]
    folders = mirror_folders(mirror, dataset)
    for folder in folders:
        check_mirror_sums(folder, dataset)
    not_mirrored = []
    for spec in missing:
        archive = find_archive(spec.name, folders)
        if archive is None:
            not_mirrored.append(spec)
        else:
            install_from_archive(archive, raw / spec.name, spec, dataset, MIRROR_ADVICE)
    if not not_mirrored:
        return
    if not download:
        name = not_mirrored[0].name
        looked = ", ".join(str(f) for f in folders) or "no mirror configured"
        raise DataError(
            f"{raw / name} is missing and no mirror holds {name}.gz (looked in: {looked}). "
            "Rerun with download=True, or point QNN_DATA_MIRROR at a folder holding the "
            "original IDX .gz files."
        )
    download_archives(raw, dataset, not_mirrored)


def is_cached(path: Path, spec: IdxSpec, dataset: str) -> bool:
    """True if `path` holds the verified file, False if absent; DataError if it is damaged."""
    if not path.exists():
        return False
    problem = content_problem(path.read_bytes(), spec, dataset)
    if problem:
        raise DataError(f"{path}: {problem}. {ROOT_ADVICE}")
    return True


def mirror_folders(mirror, dataset: str) -> list[Path]:
    """Existing folders that may hold the dataset's archives, most specific first."""
    if mirror is None:
        mirror = os.environ.get("QNN_DATA_MIRROR") or None
    candidates = [Path(mirror) / dataset, Path(mirror)] if mirror else []
    if dataset == "fashion-mnist":
        candidates.append(SYSTEM_FASHION_MIRROR)
    return [folder for folder in candidates if folder.is_dir()]


def find_archive(name: str, folders: list[Path]) -> Path | None:
    """First `<folder>/<name>.gz` that exists, or None."""
    for folder in folders:
        archive = folder / f"{name}.gz"
        if archive.is_file():
            return archive
    return None


def check_mirror_sums(folder: Path, dataset: str) -> None:
    """Refuse a mirror whose MD5SUMS file disagrees with the published checksums."""
    sums = folder / "MD5SUMS"
    if not sums.is_file():
        return
    published = MNIST_IDX_MD5 if dataset == "mnist" else FASHION_GZ_MD5
    for line in sums.read_text().splitlines():
        fields = line.split()
        if len(fields) != 2:
            continue
        listed, name = fields[0].lower(), fields[1].lstrip("*")  # "*" marks binary mode
        if name in published and listed != published[name]:
            raise DataError(
                f"{sums} lists md5 {listed} for {name}, but the published checksum is "
                f"{published[name]}: this mirror does not hold the original files. Point "
                "QNN_DATA_MIRROR at a folder holding the original IDX .gz files."
            )


def install_from_archive(archive: Path, target: Path, spec: IdxSpec, dataset: str, advice: str) -> None:
    """Decompress `archive` to a temporary file beside `target`, verify, rename into place."""
    if dataset == "fashion-mnist":
        warn_if_not_original(archive)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    partial = Path(name)
    try:
        decompress(archive, partial, advice)
        problem = content_problem(partial.read_bytes(), spec, dataset)
        if problem:
            raise DataError(f"{archive}: {problem}. {advice}")
        os.chmod(partial, 0o644)  # mkstemp makes it owner-only; data files are meant to be shared
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def decompress(archive: Path, out: Path, advice: str) -> None:
    """gunzip `archive` into `out` and flush it to disk; DataError if the archive is damaged."""
    try:
        with gzip.open(archive, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())  # the rename that follows must not expose unwritten data
    except (OSError, EOFError, zlib.error) as err:  # gzip reports truncation as EOFError
        raise DataError(f"{archive} is truncated or not a valid gzip archive ({err}). {advice}") from err


def warn_if_not_original(archive: Path) -> None:
    """Fashion-MNIST only has archive checksums: say so when this archive is not the original."""
    expected = FASHION_GZ_MD5[archive.name]
    actual = md5_of(archive.read_bytes())
    if actual != expected:
        warnings.warn(
            f"{archive} is not the published Fashion-MNIST archive (md5 {actual}, published "
            f"{expected}); it may be re-compressed, so its content was checked structurally only.",
            stacklevel=3,
        )


def download_archives(raw: Path, dataset: str, specs: list[IdxSpec]) -> None:
    """Download through torchvision into a temporary root, then install the missing files."""
    import torchvision  # slow to import and only needed here

    folder = DATASETS[dataset]
    tmp_root = Path(tempfile.mkdtemp(dir=raw.parent.parent, prefix=".download-"))
    try:
        try:
            # torchvision checks each archive against its published MD5 while downloading.
            getattr(torchvision.datasets, folder)(tmp_root, train=True, download=True)
        except (RuntimeError, OSError) as err:  # URLError is an OSError
            raise DataError(
                f"Downloading {dataset} into {tmp_root} failed: {err}. Check the network, "
                "or point QNN_DATA_MIRROR at a folder holding the original IDX .gz files."
            ) from err
        fetched = tmp_root / folder / "raw"
        for spec in specs:
            archive = fetched / f"{spec.name}.gz"
            if not archive.is_file():
                raise DataError(f"torchvision's download did not produce {archive}. {DOWNLOAD_ADVICE}")
            install_from_archive(archive, raw / spec.name, spec, dataset, DOWNLOAD_ADVICE)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


# --- checking and reading IDX content ------------------------------------------------------


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def content_problem(data: bytes, spec: IdxSpec, dataset: str) -> str | None:
    """Why `data` is not the expected IDX file of `dataset`, or None if it is."""
    problem = idx_problem(data, spec)
    if problem:
        return problem
    actual = md5_of(data)
    if dataset == "mnist" and actual != MNIST_IDX_MD5[spec.name]:
        return f"checksum mismatch: expected md5 {MNIST_IDX_MD5[spec.name]}, got {actual}"
    if dataset == "fashion-mnist" and actual in MNIST_IDX_MD5.values():
        return "holds MNIST digits, not Fashion-MNIST"
    return None


def idx_problem(data: bytes, spec: IdxSpec) -> str | None:
    """Why `data` is not a well-formed IDX file as `spec` describes, or None if it is."""
    if len(data) < spec.header_bytes:
        return f"truncated: {len(data)} bytes, shorter than the {spec.header_bytes}-byte IDX header"
    magic, count = struct.unpack(">ii", data[:8])
    if magic != spec.magic:
        return f"bad IDX header: magic number {magic}, expected {spec.magic}"
    if count != spec.count:
        return f"bad IDX header: {count} items, expected {spec.count}"
    if spec.is_images:
        rows, cols = struct.unpack(">ii", data[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            return f"bad IDX header: {rows}x{cols} images, expected {IMAGE_SIDE}x{IMAGE_SIDE}"
    if len(data) != spec.size:
        kind = "truncated" if len(data) < spec.size else "too long"
        return f"{kind}: {len(data)} bytes, expected {spec.size}"
    if not spec.is_images and max(data[spec.header_bytes:]) >= N_CLASSES:
        return f"label out of range: found {max(data[spec.header_bytes:])}, expected 0..{N_CLASSES - 1}"
    return None


def read_idx(path: Path, spec: IdxSpec) -> torch.Tensor:
    """Read a verified IDX file: uint8 images (N, 28, 28) or int64 labels (N,)."""
    data = path.read_bytes()
    problem = idx_problem(data, spec)
    if problem:  # changed on disk since it was verified
        raise DataError(f"{path}: {problem}. {ROOT_ADVICE}")
    body = np.frombuffer(data, dtype=np.uint8, offset=spec.header_bytes)
    if spec.is_images:
        return torch.from_numpy(body.reshape(spec.count, IMAGE_SIDE, IMAGE_SIDE).copy())
    return torch.from_numpy(body.astype(np.int64))


def main(argv=None) -> None:
    """`python -m qnnlib.data`: fetch and verify a dataset into the data folder (the DVC
    `data` stage); prints the split sizes and class counts."""
    import argparse

    parser = argparse.ArgumentParser(description="Fetch and verify MNIST or Fashion-MNIST.")
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, help="data folder (default: the project's data/)")
    parser.add_argument("--mirror", type=Path, help="folder of the original .gz files "
                        "(default: env QNN_DATA_MIRROR); without one, downloads")
    args = parser.parse_args(argv)
    try:
        splits = load_mnist(args.dataset, args.root, args.mirror)
    except DataError as error:
        raise SystemExit(f"error: {error}")
    print(dataset_summary(splits).to_string(index=False))


if __name__ == "__main__":
    main()
