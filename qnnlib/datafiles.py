"""Put the four verified IDX files of a dataset into torchvision's folder, never overwriting.

Each file comes, in order of preference, from that folder (``<root>/MNIST/raw``), from a
local mirror of the original ``.gz`` archives, or from the internet through torchvision.
A file already in place that fails its check is never replaced: the error tells the user
to delete it, so nothing they put there disappears silently. New files are staged in a
temporary folder inside the destination, verified, flushed to disk, then renamed into
place, so a crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import gzip
import os
import shutil
import stat
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

from qnnlib.checksums import DATASETS, IDX_FILES, IdxFile, file_problem, read_sums, sums_problem

# Debian's dataset-fashion-mnist package installs the archives here; used when present.
SYSTEM_FASHION_MIRROR = Path("/usr/share/datasets/fashion-mnist")

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


def ensure_files(raw: Path, dataset: str, mirror: Path | None, download: bool) -> None:
    """Make `raw` hold every verified IDX file of `dataset`, from `mirror` or a download."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data folder {raw} ({err}). Point root or "
                        "QNN_DATA_DIR at a writable folder.") from err
    # Check every file already in place first, so a damaged one stops us before we write.
    missing = [spec for spec in IDX_FILES if not in_place(raw / spec.name, spec, dataset)]
    if not missing:
        return
    folders = mirror_folders(mirror, dataset)
    found = {spec: find_archive(spec.name, folders) for spec in missing}
    unmirrored = [spec for spec, archive in found.items() if archive is None]
    if unmirrored and not download:
        looked = ", ".join(str(f) for f in folders) or "no mirror configured"
        name = unmirrored[0].name
        raise DataError(
            f"{raw / name} is missing and no mirror holds {name}.gz (looked in: {looked}). "
            "Rerun with download=True, or point QNN_DATA_MIRROR at a folder holding the "
            "original IDX .gz files."
        )
    with staging(raw) as stage:
        for spec, archive in found.items():
            if archive is not None:
                install_from_archive(archive, stage, raw, spec, dataset)
        if unmirrored:
            download_files(stage, raw, dataset, unmirrored)


def in_place(path: Path, spec: IdxFile, dataset: str) -> bool:
    """True if `path` holds the verified file, False if nothing is there; DataError otherwise."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as err:  # e.g. an unreadable folder: say so rather than call it missing
        raise DataError(f"{path} cannot be read ({err.strerror or err}). Make its folder "
                        "readable, or point root at another folder.") from err
    problem = file_problem(path, spec, dataset)
    if problem:
        raise DataError(f"{path}: {problem}. {ROOT_ADVICE}")
    return True


def mirror_folders(mirror: Path | None, dataset: str) -> list[Path]:
    """Existing folders that may hold the dataset's archives, most specific first."""
    candidates = [mirror / dataset, mirror] if mirror is not None else []
    if dataset == "fashion-mnist":
        candidates.append(SYSTEM_FASHION_MIRROR)
    return [folder for folder in candidates if is_folder(folder)]


def is_folder(path: Path) -> bool:
    """Whether `path` is a folder; DataError when it cannot even be looked at."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}). {MIRROR_ADVICE}") from err


def find_archive(name: str, folders: list[Path]) -> Path | None:
    """First `<folder>/<name>.gz` that exists, or None; DataError if it is not a readable file."""
    for folder in folders:
        archive = folder / f"{name}.gz"
        try:
            info = os.stat(archive)
        except FileNotFoundError:
            if os.path.islink(archive):
                raise DataError(f"{archive} is a broken symbolic link. {MIRROR_ADVICE}") from None
            continue
        except OSError as err:
            raise DataError(f"{archive} cannot be read ({err.strerror or err}). {MIRROR_ADVICE}") from err
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{archive} is not a regular file (a folder?). {MIRROR_ADVICE}")
        return archive
    return None


@contextmanager
def staging(raw: Path):
    """A temporary folder inside `raw` (same file system, so renames are atomic), removed
    on exit whatever happens."""
    try:
        stage = Path(tempfile.mkdtemp(dir=raw, prefix=".incoming-"))
    except OSError as err:
        raise DataError(f"cannot write into the data folder {raw} ({err}). Point root or "
                        "QNN_DATA_DIR at a writable folder.") from err
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def install_from_archive(archive: Path, stage: Path, raw: Path, spec: IdxFile, dataset: str) -> None:
    """Check `archive` against its mirror's lists, decompress it into `stage`, install it."""
    try:
        claims = read_sums(archive.parent)
        problem = sums_problem(claims, archive.name, archive)
    except OSError as err:
        raise DataError(f"{archive.parent}'s checksum lists cannot be read ({err}). {MIRROR_ADVICE}") from err
    if problem:
        raise DataError(f"{problem}. {MIRROR_ADVICE}")
    staged = stage / spec.name
    gunzip(archive, staged, limit=spec.size)
    problem = sums_problem(claims, spec.name, staged)
    if problem:
        raise DataError(f"{problem} (decompressed from {archive}). {MIRROR_ADVICE}")
    install(staged, raw / spec.name, spec, dataset, source=archive, advice=MIRROR_ADVICE)


def gunzip(archive: Path, out: Path, limit: int) -> None:
    """Decompress `archive` into `out`, refusing to write more than `limit` + 1 bytes (a
    hostile archive may expand to far more than the disk holds)."""
    written = 0
    try:
        with gzip.open(archive, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                dst.write(chunk)
                if written > limit:
                    break  # the size check in `install` reports it as too long
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # gzip reports truncation as EOFError
        raise DataError(f"{archive} is truncated or not a valid gzip archive ({err}). "
                        f"{MIRROR_ADVICE}") from err
    except OSError as err:
        raise DataError(f"{archive} cannot be read or decompressed into {out.parent} ({err}). "
                        f"{MIRROR_ADVICE}") from err


def install(staged: Path, target: Path, spec: IdxFile, dataset: str, source, advice: str) -> None:
    """Verify `staged`, flush it to disk and rename it to `target`."""
    problem = file_problem(staged, spec, dataset)
    if problem:
        raise DataError(f"{source}: {problem}. {advice}")
    try:
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())  # the rename that follows must not expose unwritten data
        os.replace(staged, target)
    except OSError as err:  # e.g. a folder appeared under that name meanwhile
        raise DataError(f"cannot install {target} from {source} ({err}). {ROOT_ADVICE}") from err


def download_files(stage: Path, raw: Path, dataset: str, specs: list[IdxFile]) -> None:
    """Download through torchvision into `stage`, then install the files still missing."""
    from torchvision import datasets  # slow to import; only needed for downloads and reads

    try:
        # torchvision checks each archive against its published MD5 while downloading.
        getattr(datasets, DATASETS[dataset])(stage, train=True, download=True)
    except Exception as err:  # network (URLError), checksum (RuntimeError), disk (OSError) ...
        raise DataError(
            f"Downloading {dataset} for {raw / specs[0].name} failed: {err}. Check the "
            "network, or point QNN_DATA_MIRROR at a folder holding the original IDX .gz files."
        ) from err
    fetched = stage / DATASETS[dataset] / "raw"
    for spec in specs:
        source = f"the downloaded {spec.name}.gz"
        if not (fetched / spec.name).is_file():
            raise DataError(f"{source} was not extracted to {fetched / spec.name}. {DOWNLOAD_ADVICE}")
        install(fetched / spec.name, raw / spec.name, spec, dataset, source=source, advice=DOWNLOAD_ADVICE)
