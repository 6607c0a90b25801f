"""What the MNIST and Fashion-MNIST IDX files must be, and why a given file is not that.

Every file is identified by the MD5 of its *decompressed* IDX content. Archive checksums
are not used for mirrors, because mirrors (ours and Debian's included) hold re-compressed
archives whose bytes differ while their content is identical; torchvision checks the
archive MD5s itself when it downloads.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE

# name -> torchvision dataset class, which is also its folder under the data root
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# MD5s of the decompressed IDX files. MNIST: published with the database
# (yann.lecun.com/exdb/mnist). Fashion-MNIST: Zalando publishes archive MD5s only; these
# are the MD5s of the content of those published archives (the same content as Debian's
# dataset-fashion-mnist package, whose archives are re-compressed).
PUBLISHED_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

SUMS_FILES = {"MD5SUMS": "md5", "SHA256SUMS": "sha256"}  # a mirror's own checksum lists


@dataclass(frozen=True)
class IdxFile:
    """One of the four IDX files: its name, item count, and hence magic number and size."""

    name: str
    count: int

    @property
    def is_images(self) -> bool:
        return "images" in self.name

    @property
    def magic(self) -> int:
        return 2051 if self.is_images else 2049  # 0x0803: 3-D uint8, 0x0801: 1-D uint8

    @property
    def size(self) -> int:
        header = 16 if self.is_images else 8
        return header + self.count * (N_PIXELS if self.is_images else 1)


IDX_FILES = (
    IdxFile("train-images-idx3-ubyte", 60_000),
    IdxFile("train-labels-idx1-ubyte", 60_000),
    IdxFile("t10k-images-idx3-ubyte", 10_000),
    IdxFile("t10k-labels-idx1-ubyte", 10_000),
)


def digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks (the files are up to 47 MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def file_problem(path: Path, spec: IdxFile, dataset: str) -> str | None:
    """Why `path` is not `dataset`'s published `spec` file, or None if it is.

    Cheap checks come first, so that a huge or foreign file is never read in full and the
    message says what is wrong (empty, truncated, not IDX) rather than only "checksum".
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return "is a directory, not a file" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
        if info.st_size != spec.size:
            kind = "empty" if info.st_size == 0 else "truncated" if info.st_size < spec.size else "too long"
            return f"{kind}: {info.st_size} bytes, expected {spec.size}"
        with open(path, "rb") as handle:
            magic = int.from_bytes(handle.read(4), "big")
        if magic != spec.magic:
            kind = "image" if spec.is_images else "label"
            return f"not an IDX {kind} file: magic number {magic}, expected {spec.magic}"
        actual = digest(path)
    except FileNotFoundError:
        return "is a broken symbolic link"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    expected = PUBLISHED_MD5[dataset][spec.name]
    if actual == expected:
        return None
    other = [name for name, table in PUBLISHED_MD5.items() if table[spec.name] == actual]
    if other:
        return f"holds {other[0]}'s {spec.name}, not {dataset}'s"
    return f"checksum mismatch: expected md5 {expected}, got {actual}"


def read_sums(folder: Path) -> list[tuple[Path, str, str, str]]:
    """(list file, algorithm, file name, hex digest) for every entry of the folder's
    MD5SUMS / SHA256SUMS, as written by md5sum / sha256sum. Unparsable lines are skipped:
    the lists are the mirror's claims, checked against its files, not our authority."""
    entries = []
    for list_name, algorithm in SUMS_FILES.items():
        listing = folder / list_name
        if not listing.is_file():
            continue
        for line in listing.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) == 2:
                name = fields[1].lstrip("*")  # "*" marks binary mode
                entries.append((listing, algorithm, name, fields[0].lower()))
    return entries


def sums_problem(entries, name: str, path: Path) -> str | None:
    """Why `path` disagrees with what the mirror's lists say about the file `name`, or None."""
    for listing, algorithm, listed_name, listed in entries:
        if listed_name == name:
            actual = digest(path, algorithm)
            if actual != listed:
                return (f"{listing} lists {algorithm} {listed} for {name}, but the file has "
                        f"{actual}: the mirror is damaged or its list is stale")
    return None
