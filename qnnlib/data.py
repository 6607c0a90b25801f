"""MNIST and Fashion-MNIST as verified uint8 tensors, split the way the paper splits them.

torchvision reads the files and downloads them; this module adds what it lacks. Files
live in torchvision's layout (``<root>/MNIST/raw/train-images-idx3-ubyte``, and
``FashionMNIST/raw`` for Fashion-MNIST), so a folder torchvision already filled is reused.
Before anything is read, `qnnlib.datafiles` makes sure the four IDX files are there and
are the published ones (MD5 of the decompressed content, `qnnlib.checksums`), taking
missing ones from a local mirror of the ``.gz`` archives when there is one, and never
overwriting a file that is already there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from qnnlib.checksums import DATASETS, N_PIXELS
from qnnlib.datafiles import DataError, ensure_files

__all__ = ["DataError", "Split", "dataset_summary", "load_mnist", "scale_inputs", "DATASETS", "N_TRAIN"]

N_CLASSES = 10
N_TRAIN = 50_000  # the authors' code trains on [0, 50000) and validates on [50000, 60000)


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

    dataset: "mnist" or "fashion-mnist". root: data folder (default: env QNN_DATA_DIR, else
    `data/` in the working directory). mirror: folder of the original ``.gz`` archives,
    directly or in a subfolder named after the dataset (default: env QNN_DATA_MIRROR; for
    Fashion-MNIST also the Debian package's folder). download: fetch through torchvision
    what neither root nor mirror holds.
    Raises DataError for missing, damaged or unreadable files; ValueError for an unknown
    dataset or an empty path; TypeError for arguments of the wrong type.
    """
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    if not isinstance(download, bool):  # "no" or 0.0 would otherwise be taken as yes / no
        raise TypeError(f"download must be True or False, got {download!r}")
    root = as_folder(root, "root", env="QNN_DATA_DIR", default="data")
    mirror = as_folder(mirror, "mirror", env="QNN_DATA_MIRROR", default=None)
    if mirror is not None and not os.path.isdir(mirror):  # a typo must not fall back to downloading
        raise DataError(f"the mirror {mirror} is not a folder. Point mirror or QNN_DATA_MIRROR "
                        "at a folder holding the original IDX .gz files, or unset it.")
    ensure_files(root / DATASETS[dataset] / "raw", dataset, mirror, download)
    (train_images, train_labels), (test_images, test_labels) = (
        read_with_torchvision(root, dataset, train) for train in (True, False))
    return {
        "train": Split(train_images[:N_TRAIN], train_labels[:N_TRAIN]),
        "val": Split(train_images[N_TRAIN:], train_labels[N_TRAIN:]),
        "test": Split(test_images, test_labels),
    }


def as_folder(value, argument: str, env: str, default: str | None) -> Path | None:
    """`value` (or env `env`, or `default`) as a Path; TypeError/ValueError naming `argument`."""
    if value is None:
        value = os.environ.get(env) or default  # an empty variable counts as unset
        argument = f"{argument} (from {env})" if os.environ.get(env) else argument
        if value is None:
            return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a folder path (str or os.PathLike), got {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"{argument} must be a non-empty folder path without NUL bytes, got {text!r}")
    return Path(text)


def read_with_torchvision(root: Path, dataset: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 28, 28), int64 labels (N,)) of the verified files in `root`."""
    try:
        from torchvision import datasets  # slow to import; `import qnnlib.data` stays light
    except ImportError:  # GPU nodes may have torch without torchvision
        return read_idx_files(root / DATASETS[dataset] / "raw", "train" if train else "t10k")

    processed = root / DATASETS[dataset] / "processed"
    if (processed / "training.pt").exists() and (processed / "test.pt").exists():
        # torchvision would read this cache of old versions instead of the verified files.
        raise DataError(f"{processed} holds an old torchvision cache that would be read instead "
                        "of the verified IDX files. Delete that folder and rerun.")
    split = getattr(datasets, DATASETS[dataset])(root, train=train, download=False)
    return split.data, split.targets


def read_idx_files(raw: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What torchvision reads from the verified IDX files, without torchvision: uint8
    images (N, 28, 28) after a 16-byte header, labels (N,) after an 8-byte header."""
    def body(name: str, header: int) -> torch.Tensor:
        return torch.frombuffer(bytearray((raw / name).read_bytes()[header:]), dtype=torch.uint8)

    images = body(f"{prefix}-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    return images, body(f"{prefix}-labels-idx1-ubyte", 8).long()


def dataset_summary(splits: dict[str, Split]):
    """pandas DataFrame with one row per split: split, n, and the count of each class "0".."9"."""
    import pandas as pd  # only notebooks need it; keep `import qnnlib.data` light

    rows = []
    for name, split in splits.items():
        counts = torch.bincount(split.labels, minlength=N_CLASSES).tolist()
        rows.append({"split": name, "n": len(split), **{str(c): n for c, n in enumerate(counts)}})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    """`python -m qnnlib.data`: fetch and verify a dataset into the data folder (the DVC
    `data` stage); prints the split sizes and class counts."""
    import argparse

    parser = argparse.ArgumentParser(description="Fetch and verify MNIST or Fashion-MNIST.")
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, help="data folder (default: env QNN_DATA_DIR, else ./data)")
    parser.add_argument("--mirror", type=Path, help="folder of the original .gz files "
                        "(default: env QNN_DATA_MIRROR); without one, downloads")
    parser.add_argument("--no-download", action="store_true", help="fail rather than download")
    args = parser.parse_args(argv)
    try:
        splits = load_mnist(args.dataset, args.root, args.mirror, download=not args.no_download)
    except (DataError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    print(dataset_summary(splits).to_string(index=False))


if __name__ == "__main__":
    main()
