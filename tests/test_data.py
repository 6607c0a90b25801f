"""qnnlib.data: the paper's MNIST splits, checksum verification, mirror and download paths,
and hostile input (wrong arguments, damaged archives, damaged files already in root).

Real data comes from the shared offline mirror (QNN_DATA_MIRROR, else ../shared/datasets
beside the checkout) and is loaded once per session; every other test starts from copies.
The network is never touched: torchvision's downloader is replaced in every test.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.mnist as tv_mnist
from torchvision.datasets.utils import extract_archive

from qnnlib import checksums, data, datafiles
from qnnlib.data import DataError, Split, load_mnist, scale_inputs
from qnnpipeline import paths

NAMES = [spec.name for spec in checksums.IDX_FILES]
SMALL = "t10k-labels-idx1-ubyte"  # the 10 kB file: cheap to damage and rebuild
# Well-known first labels of the official files: catches a split taken from the wrong end.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


def find_archives(subfolder: str, root: Path) -> Path | None:
    """The folder under `root` (or `root` itself) holding the four .gz files, or None."""
    for folder in (root / subfolder, root):
        if all((folder / f"{name}.gz").is_file() for name in NAMES):
            return folder
    return None


ARCHIVES = find_archives("mnist", Path(os.environ.get("QNN_DATA_MIRROR")
                                       or paths.root().parent / "shared" / "datasets"))
needs_mirror = pytest.mark.skipif(ARCHIVES is None, reason="shared MNIST mirror not found")
needs_fashion = pytest.mark.skipif(find_archives("", DEBIAN_FASHION) is None,
                                   reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No env mirror or data folder, no system Fashion-MNIST, a downloader that fails."""
    for variable in ("QNN_DATA_MIRROR", "QNN_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(datafiles, "SYSTEM_FASHION_MIRROR", Path("/nonexistent-qnn-fashion-mirror"))

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
    """A new root holding the verified files, except those named in `leave_out`. Hard links
    (instant; a test that damaged one would fail its own `snapshot` check), else copies."""
    root = tmp_path / "root"
    raw_of(root).mkdir(parents=True)
    for name in NAMES:
        if name not in leave_out:
            try:
                os.link(raw_of(loaded_root) / name, raw_of(root) / name)
            except OSError:
                shutil.copyfile(raw_of(loaded_root) / name, raw_of(root) / name)
    return root


def copy_mirror(tmp_path: Path, names=NAMES) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(ARCHIVES / f"{name}.gz", mirror / f"{name}.gz")
    return mirror


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its inode, size, and modification and change times:
    a rewrite, truncation, rename over or chmod of any of them changes this."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_size,
                                               p.stat().st_mtime_ns, p.stat().st_ctime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed or finished load must not leave behind."""
    return [p.name for p in folder.rglob(".*")]


def flip_byte(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def idx_bytes(name: str) -> bytes:
    """The decompressed official file, read independently of the code under test."""
    return gzip.decompress((ARCHIVES / f"{name}.gz").read_bytes())


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


def test_split_len_and_inputs():
    split = Split(torch.full((3, 28, 28), 255, dtype=torch.uint8), torch.tensor([1, 2, 3]))
    assert len(split) == 3 and split.inputs().shape == (3, 784) and split.inputs().eq(1).all()


# --- loading real MNIST: bit for bit what the IDX bytes say --------------------------------------


def independent_splits(read) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The paper's splits from raw IDX bytes with numpy alone (`read(name)` gives the bytes)."""
    images = {part: np.frombuffer(read(f"{part}-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 28, 28)
              for part in ("train", "t10k")}
    labels = {part: np.frombuffer(read(f"{part}-labels-idx1-ubyte"), np.uint8, offset=8).astype(np.int64)
              for part in ("train", "t10k")}
    return {"train": (images["train"][:50_000], labels["train"][:50_000]),
            "val": (images["train"][50_000:], labels["train"][50_000:]),
            "test": (images["t10k"], labels["t10k"])}


def assert_bit_identical(splits, reference, check_inputs=True):
    for name, (images, labels) in reference.items():
        split = splits[name]
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert torch.equal(split.images, torch.from_numpy(images.copy()))
        assert torch.equal(split.labels, torch.from_numpy(labels))
        if check_inputs:
            # The same IEEE float32 operations in numpy: 2x, /255, -1, each rounded once.
            pixels = images.reshape(-1, 784).astype(np.float32)
            expected = np.float32(2) * pixels / np.float32(255) - np.float32(1)
            assert torch.equal(split.inputs(), torch.from_numpy(expected))


@needs_mirror
def test_splits_are_bit_identical_to_an_independent_read_of_the_idx_bytes(loaded):
    assert_bit_identical(loaded[1], independent_splits(idx_bytes))


@needs_mirror
def test_inputs_match_the_digests_recorded_before_the_move_to_torchvision(loaded):
    # sha256 of Split.inputs() from the previous, hand-written reader (commit 6e4a1d8).
    recorded = {"train": "8ea2a01f838080458c6d21aa67c1ee3fe84d8d35629c0687c1cf990b80be1043",
                "val": "437d005617a226058cb3a25732fe13de88cbd199ba21205effb358e98ccb4bf1",
                "test": "ecfdc946dfc8cd3cc8365b3021f045aa9cc2a28b92f0de01bc82d87bd6dac7c1"}
    found = {name: hashlib.sha256(split.inputs().numpy().tobytes()).hexdigest()
             for name, split in loaded[1].items()}
    assert found == recorded


@needs_mirror
def test_load_gives_the_papers_splits(loaded):
    _, splits = loaded
    assert {name: len(split) for name, split in splits.items()} == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert splits["train"].labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert splits["test"].labels[:10].tolist() == FIRST_TEST_LABELS


@needs_mirror
def test_second_load_uses_the_cached_files(loaded, monkeypatch):
    root, splits = loaded
    before = snapshot(root)

    def must_not_install(*args, **kwargs):
        raise AssertionError("cached files should have been used")

    monkeypatch.setattr(datafiles, "install", must_not_install)
    again = load_mnist(root=root, mirror=None, download=False)
    assert torch.equal(again["test"].images, splits["test"].images)
    assert snapshot(root) == before and leftovers(root) == []


@needs_mirror
def test_root_is_readable_by_torchvision(loaded):
    root, splits = loaded
    assert torch.equal(tv_mnist.MNIST(root, train=False, download=False).data, splits["test"].images)


@needs_mirror
def test_dataset_summary_counts_every_example(loaded):
    summary = data.dataset_summary(loaded[1])
    assert summary["split"].tolist() == ["train", "val", "test"]
    classes = [str(c) for c in range(10)]
    assert (summary[classes].sum(axis=1) == summary["n"]).all()
    assert summary.loc[summary.split == "test", "1"].item() == 1135  # the well-known test count of ones


@needs_mirror
def test_shared_mirror_lists_agree_with_the_published_table_and_the_files():
    md5s = dict(reversed(line.split()) for line in (ARCHIVES / "MD5SUMS").read_text().splitlines() if line.strip())
    assert md5s == checksums.PUBLISHED_MD5["mnist"]
    assert {name: hashlib.md5(idx_bytes(name)).hexdigest() for name in NAMES} == md5s


@needs_mirror
def test_root_defaults_to_data_in_the_working_directory(tmp_path, monkeypatch, loaded):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(loaded[0] / "MNIST", tmp_path / "data" / "MNIST")
    assert torch.equal(load_mnist(download=False)["val"].labels, loaded[1]["val"].labels)
    monkeypatch.setenv("QNN_DATA_DIR", "")  # empty counts as unset, not as the working directory
    assert len(load_mnist(download=False)["test"]) == 10_000


# --- Fashion-MNIST -------------------------------------------------------------------------------


@needs_fashion
def test_fashion_loads_bit_identically_from_the_debian_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "SYSTEM_FASHION_MIRROR", DEBIAN_FASHION)
    splits = load_mnist("fashion-mnist", root=tmp_path, download=False)  # found without a mirror
    reference = independent_splits(lambda name: gzip.decompress((DEBIAN_FASHION / f"{name}.gz").read_bytes()))
    assert_bit_identical(splits, reference, check_inputs=False)  # inputs: a function of images
    assert sorted(p.name for p in raw_of(tmp_path, "FashionMNIST").iterdir()) == sorted(NAMES)


@needs_mirror
def test_fashion_refuses_mnist_files(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: holds mnist's train-images-idx3-ubyte"):
        load_mnist("fashion-mnist", root=tmp_path, mirror=ARCHIVES, download=False)
    assert list(raw_of(tmp_path, "FashionMNIST").iterdir()) == []


# --- hostile arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["kmnist", "MNIST", "fashion_mnist", "", " mnist", None, 3, ["mnist"]])
def test_unknown_dataset_is_a_value_error(tmp_path, dataset):
    with pytest.raises(ValueError, match=r"dataset must be one of \['fashion-mnist', 'mnist'\]"):
        load_mnist(dataset, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argument", ["root", "mirror"])
@pytest.mark.parametrize("value", [3, 1.5, b"data", ["data"], object()])
def test_path_argument_of_the_wrong_type_is_a_type_error(tmp_path, monkeypatch, argument, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=f"{argument} must be a folder path .str or os.PathLike., got"):
        load_mnist(**{argument: value}, download=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argument", ["root", "mirror"])
@pytest.mark.parametrize("value", ["", "da\0ta"])
def test_empty_or_nul_path_is_a_value_error(tmp_path, monkeypatch, argument, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{argument} must be a non-empty folder path"):
        load_mnist(**{argument: value}, download=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("download", ["no", 0, 1, None])
def test_download_must_be_a_bool(tmp_path, download):
    with pytest.raises(TypeError, match="download must be True or False"):
        load_mnist(root=tmp_path, download=download)


def test_mirror_that_is_not_a_folder_is_refused_not_skipped(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    for mirror in (tmp_path / "no-such-folder", tmp_path / "a-file"):
        with pytest.raises(DataError, match=f"the mirror {mirror} is not a folder"):
            load_mnist(root=tmp_path / "root", mirror=mirror, download=True)  # must not download instead
    monkeypatch.setenv("QNN_DATA_MIRROR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="typo is not a folder.*QNN_DATA_MIRROR"):
        load_mnist(root=tmp_path / "root")


def test_root_that_is_a_file_is_a_data_error(tmp_path):
    (tmp_path / "root").write_bytes(b"precious")
    with pytest.raises(DataError, match="cannot create the data folder .*root/MNIST/raw"):
        load_mnist(root=tmp_path / "root", download=False)
    assert (tmp_path / "root").read_bytes() == b"precious"


# --- damaged mirror archives: a clear error naming the archive, nothing installed ---------------


def labels_idx(magic=2049, count=10_000, body=b"\x03" * 10_000) -> bytes:
    return magic.to_bytes(4, "big") + count.to_bytes(4, "big") + body


def cut_gzip(archive: Path) -> None:
    archive.write_bytes(archive.read_bytes()[:-200])


def flip_deflate(archive: Path) -> None:
    flip_byte(archive, archive.stat().st_size // 2)


def flip_crc(archive: Path) -> None:
    flip_byte(archive, archive.stat().st_size - 6)  # inside the CRC-32 trailer


def flip_magic(archive: Path) -> None:
    flip_byte(archive, 0)


def gzipped(content: bytes):
    return lambda archive: archive.write_bytes(gzip.compress(content))


def wrong_label(archive: Path) -> None:
    content = bytearray(gzip.decompress(archive.read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # still a valid label: only the checksum can tell
    archive.write_bytes(gzip.compress(bytes(content)))


def make_folder(archive: Path) -> None:
    archive.unlink()
    archive.mkdir()


def broken_link(archive: Path) -> None:
    archive.unlink()
    archive.symlink_to(archive.parent / "nowhere.gz")


ARCHIVE_DAMAGE = {  # what is done to the mirror's t10k-labels-idx1-ubyte.gz -> what the error says
    "truncated gzip": (cut_gzip, "is truncated or not a valid gzip archive"),
    "bit flip in deflate data": (flip_deflate, "is truncated or not a valid gzip archive"),
    "bit flip in CRC trailer": (flip_crc, "is truncated or not a valid gzip archive"),
    "bit flip in gzip magic": (flip_magic, "is truncated or not a valid gzip archive"),
    "not gzip at all": (lambda a: a.write_bytes(labels_idx()), "is truncated or not a valid gzip archive"),
    "empty archive": (lambda a: a.write_bytes(b""), r"empty: 0 bytes, expected 10008"),
    "gzip of an empty file": (gzipped(b""), r"empty: 0 bytes, expected 10008"),
    "short IDX inside": (gzipped(labels_idx(body=b"\x03" * 9_999)), r"truncated: 10007 bytes, expected 10008"),
    "long IDX inside": (gzipped(labels_idx(body=b"\x03" * 10_001)), r"too long: 10009 bytes"),
    "gzip bomb": (gzipped(bytes(50_000_000)), r"too long: \d+ bytes, expected 10008"),
    "wrong magic number": (gzipped(labels_idx(magic=2051)), "not an IDX label file: magic number 2051"),
    "images posing as labels": (gzipped(bytes(10_008)), "not an IDX label file: magic number 0"),
    "valid IDX, wrong content": (wrong_label, "checksum mismatch: expected md5 27ae3e4e09519cfbb04c329615203637"),
    "folder instead of archive": (make_folder, r"is not a regular file"),
    "broken symbolic link": (broken_link, r"is a broken symbolic link"),
}


@needs_mirror
@pytest.mark.parametrize("damage", list(ARCHIVE_DAMAGE))
def test_damaged_mirror_archive_is_refused_and_installs_nothing(tmp_path, loaded, damage):
    change, message = ARCHIVE_DAMAGE[damage]
    root = seeded_root(tmp_path, loaded[0], leave_out=[SMALL])
    mirror = copy_mirror(tmp_path, [SMALL])
    change(mirror / f"{SMALL}.gz")
    before = snapshot(root)
    with pytest.raises(DataError, match=rf"{SMALL}\.gz:? {message}"):
        load_mnist(root=root, mirror=mirror, download=True)  # a mirror hit must never fall back
    assert snapshot(root) == before and leftovers(root) == []


@needs_mirror
def test_missing_archive_without_download_names_the_file_and_the_folders(tmp_path):
    mirror = copy_mirror(tmp_path, [name for name in NAMES if name != "t10k-images-idx3-ubyte"])
    with pytest.raises(DataError, match=r"(?s)t10k-images-idx3-ubyte is missing.*looked in: .*mirror"):
        load_mnist(root=tmp_path / "root", mirror=mirror, download=False)
    assert list(raw_of(tmp_path / "root").iterdir()) == []  # checked before anything is written


def test_no_mirror_and_no_download_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="(?s)train-images-idx3-ubyte is missing.*QNN_DATA_MIRROR"):
        load_mnist(root=tmp_path, download=False)


# --- a mirror's own checksum lists (MD5SUMS, SHA256SUMS) are compared with its files ------------


def listed(mirror: Path, list_name: str, name: str, hexdigest: str) -> None:
    with open(mirror / list_name, "a") as handle:
        handle.write(f"{hexdigest}  {name}\n")


@needs_mirror
@pytest.mark.parametrize("list_name, algorithm", [("MD5SUMS", "md5"), ("SHA256SUMS", "sha256")])
@pytest.mark.parametrize("name", [f"{SMALL}.gz", SMALL])
def test_mirror_list_that_disagrees_with_a_file_is_refused(tmp_path, loaded, list_name, algorithm, name):
    root = seeded_root(tmp_path, loaded[0], leave_out=[SMALL])
    mirror = copy_mirror(tmp_path, [SMALL])
    wrong = "0" * len(hashlib.new(algorithm).hexdigest())
    listed(mirror, list_name, name, wrong)
    before = snapshot(root)
    with pytest.raises(DataError, match=f"{list_name} lists {algorithm} {wrong} for {name}, but the file has"):
        load_mnist(root=root, mirror=mirror, download=False)
    assert snapshot(root) == before and leftovers(root) == []


@needs_mirror
def test_mirror_lists_that_agree_with_the_files_pass(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0], leave_out=[SMALL])
    mirror = copy_mirror(tmp_path, [SMALL])
    archive = mirror / f"{SMALL}.gz"
    listed(mirror, "MD5SUMS", f"*{SMALL}.gz", hashlib.md5(archive.read_bytes()).hexdigest())  # binary mode
    listed(mirror, "SHA256SUMS", SMALL, hashlib.sha256(idx_bytes(SMALL)).hexdigest())
    listed(mirror, "MD5SUMS", "an unparsable line", "")
    splits = load_mnist(root=root, mirror=mirror, download=False)
    assert torch.equal(splits["test"].labels, loaded[1]["test"].labels)


# --- damaged files already in root: reported, never replaced, even with a good source at hand ---


def serve_from(folder: Path, requested: list[str]):
    """Stand-in for torchvision's download_and_extract_archive that copies from `folder`."""

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        requested.append(url)
        os.makedirs(download_root, exist_ok=True)
        target = os.path.join(download_root, filename)
        shutil.copyfile(folder / filename, target)
        extract_archive(target, download_root)

    return fake_download


def replace_with(make):
    def change(path: Path) -> None:
        path.unlink()
        make(path)
    return change


def append_byte(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0")


ROOT_DAMAGE = {  # what is done to root's t10k-images-idx3-ubyte -> what the error says after its name
    "flipped pixel": (lambda p: flip_byte(p, 5000), "checksum mismatch: expected md5 2646ac647ad5339dbf082846283269ea"),
    "truncated": (lambda p: os.truncate(p, 1_000_000), "truncated: 1000000 bytes, expected 7840016"),
    "empty": (lambda p: os.truncate(p, 0), "empty: 0 bytes, expected 7840016"),
    "too long": (append_byte, "too long: 7840017 bytes"),
    "wrong magic number": (lambda p: flip_byte(p, 3), "not an IDX image file: magic number 2300"),
    "labels posing as images": (replace_with(lambda p: p.write_bytes(labels_idx(body=bytes(7_840_008)))),
                                "not an IDX image file: magic number 2049"),
    "directory": (replace_with(lambda p: p.mkdir()), "is a directory, not a file"),
    "broken symbolic link": (replace_with(lambda p: p.symlink_to(p.parent / "gone")), "is a broken symbolic link"),
    "named pipe": (replace_with(os.mkfifo), "is not a regular file"),  # reading it would hang
}


@needs_mirror
@pytest.mark.parametrize("damage", list(ROOT_DAMAGE))
def test_damaged_file_in_root_is_reported_and_left_untouched(tmp_path, loaded, monkeypatch, damage):
    change, message = ROOT_DAMAGE[damage]
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", serve_from(ARCHIVES, []))
    root = seeded_root(tmp_path, loaded[0], leave_out=["t10k-images-idx3-ubyte"])
    damaged = raw_of(root) / "t10k-images-idx3-ubyte"
    shutil.copyfile(raw_of(loaded[0]) / damaged.name, damaged)  # a copy: the shared file stays intact
    change(damaged)
    before, kind = snapshot(root), damaged.lstat().st_mode
    with pytest.raises(DataError, match=rf"(?s)t10k-images-idx3-ubyte:? {message}.*Delete it"):
        load_mnist(root=root, mirror=ARCHIVES, download=True)  # good sources must not replace it
    assert snapshot(root) == before and damaged.lstat().st_mode == kind and leftovers(root) == []


def unreadable(monkeypatch, folder: Path) -> None:
    """Make every stat inside `folder` fail as an unreadable folder does for a non-root user."""
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def refuse(path, *args, _real=real, **kwargs):
            if str(os.fspath(path)).startswith(f"{folder}{os.sep}"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, refuse)


def test_unreadable_data_folder_is_a_data_error_not_a_missing_file(tmp_path, monkeypatch):
    raw_of(tmp_path).mkdir(parents=True)
    unreadable(monkeypatch, raw_of(tmp_path))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte cannot be read \(Permission denied\)"):
        load_mnist(root=tmp_path, download=True)


@needs_mirror
def test_unreadable_mirror_folder_is_a_data_error(tmp_path, loaded, monkeypatch):
    root = seeded_root(tmp_path, loaded[0], leave_out=[SMALL])
    mirror = copy_mirror(tmp_path, [SMALL])
    before = snapshot(root)
    unreadable(monkeypatch, mirror)
    with pytest.raises(DataError, match=r"mirror/(mnist|t10k-labels-idx1-ubyte\.gz) cannot be read \(Permission denied\)"):
        load_mnist(root=root, mirror=mirror, download=True)
    monkeypatch.undo()
    assert snapshot(root) == before and leftovers(root) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_data_folder_for_real(tmp_path):
    raw_of(tmp_path).mkdir(parents=True)
    raw_of(tmp_path).chmod(0)
    try:
        with pytest.raises(DataError, match="cannot be read"):
            load_mnist(root=tmp_path, download=True)
    finally:
        raw_of(tmp_path).chmod(0o755)


@needs_mirror
def test_old_torchvision_cache_is_refused_rather_than_read(tmp_path, loaded):
    root = seeded_root(tmp_path, loaded[0])
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save((torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)), processed / name)
    with pytest.raises(DataError, match=r"MNIST/processed holds an old torchvision cache.*Delete that folder"):
        load_mnist(root=root, download=False)
    assert sorted(p.name for p in processed.iterdir()) == ["test.pt", "training.pt"]


# --- downloading through torchvision ----------------------------------------------------------


@needs_mirror
def test_download_goes_through_torchvision_and_installs_only_missing_files(tmp_path, loaded, monkeypatch):
    requested = []
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", serve_from(ARCHIVES, requested))
    root = seeded_root(tmp_path, loaded[0], leave_out=["t10k-images-idx3-ubyte", SMALL])
    kept = snapshot(root)
    splits = load_mnist(root=root, mirror=None, download=True)
    assert sorted(url.rsplit("/", 1)[1] for url in requested) == sorted(f"{name}.gz" for name in NAMES)
    assert all(url.startswith(tuple(tv_mnist.MNIST.mirrors)) for url in requested)
    assert torch.equal(splits["test"].images, loaded[1]["test"].images)
    after = snapshot(root)
    assert {name: after[name] for name in kept} == kept  # good files are not rewritten
    assert sorted(after) == sorted(f"MNIST/raw/{name}" for name in NAMES) and leftovers(root) == []


def test_failed_download_is_a_data_error_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="(?s)Downloading mnist for .*train-images-idx3-ubyte failed.*network disabled"):
        load_mnist(root=tmp_path, download=True)
    assert list(raw_of(tmp_path).iterdir()) == [] and leftovers(tmp_path) == []


@needs_mirror
def test_download_with_damaged_content_installs_nothing(tmp_path, loaded, monkeypatch):
    served = copy_mirror(tmp_path, [SMALL])
    labels = served / f"{SMALL}.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-1]))
    for name in NAMES[:3]:
        os.symlink(ARCHIVES / f"{name}.gz", served / f"{name}.gz")
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", serve_from(served, []))
    root = seeded_root(tmp_path, loaded[0], leave_out=[SMALL])
    before = snapshot(root)
    with pytest.raises(DataError, match=rf"the downloaded {SMALL}\.gz: truncated: 10007 bytes"):
        load_mnist(root=root, download=True)
    assert snapshot(root) == before and leftovers(root) == []


# --- Fashion-MNIST without the Debian package: synthetic files under patched checksums --------


@pytest.fixture(scope="session")
def fake_fashion(tmp_path_factory):
    """(folder of well-formed Fashion-MNIST-shaped .gz archives, their content MD5s)."""
    folder = tmp_path_factory.mktemp("system") / "fashion-mnist"
    folder.mkdir()
    md5s = {}
    for spec in checksums.IDX_FILES:
        header = spec.magic.to_bytes(4, "big") + spec.count.to_bytes(4, "big")
        if spec.is_images:
            header += (28).to_bytes(4, "big") * 2
            body = np.zeros((spec.count, 28 * 28), np.uint8)
            body[:, 0] = np.arange(spec.count) % 256
        else:
            body = (np.arange(spec.count) % 10).astype(np.uint8)
        content = header + body.tobytes()
        md5s[spec.name] = hashlib.md5(content).hexdigest()
        (folder / f"{spec.name}.gz").write_bytes(gzip.compress(content, compresslevel=1))
    return folder, md5s


def test_fashion_is_found_in_the_system_folder(tmp_path, fake_fashion, monkeypatch):
    folder, md5s = fake_fashion
    monkeypatch.setattr(datafiles, "SYSTEM_FASHION_MIRROR", folder)
    monkeypatch.setitem(checksums.PUBLISHED_MD5, "fashion-mnist", md5s)
    splits = load_mnist("fashion-mnist", root=tmp_path, download=False)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert splits["val"].labels[:3].tolist() == [0, 1, 2]  # 50000 % 10 == 0
    assert splits["val"].images[1, 0, 0].item() == 50_001 % 256
    assert sorted(p.name for p in raw_of(tmp_path, "FashionMNIST").iterdir()) == sorted(NAMES)


def test_fashion_files_that_are_not_the_published_ones_are_refused(tmp_path, fake_fashion, monkeypatch):
    monkeypatch.setattr(datafiles, "SYSTEM_FASHION_MIRROR", fake_fashion[0])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch: expected md5 f4a8712d"):
        load_mnist("fashion-mnist", root=tmp_path, download=False)


# --- the command line (the DVC `data` stage) ------------------------------------------------------


@needs_mirror
def test_command_line_fetches_into_qnn_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QNN_DATA_DIR", str(tmp_path / "env-data"))
    data.main(["--mirror", str(ARCHIVES), "--no-download"])
    assert "50000" in capsys.readouterr().out
    assert sorted(p.name for p in raw_of(tmp_path / "env-data").iterdir()) == sorted(NAMES)


def test_command_line_reports_errors_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*train-images-idx3-ubyte is missing"):
        data.main(["--root", str(tmp_path), "--no-download"])
    with pytest.raises(SystemExit, match="2"):  # argparse: unknown dataset
        data.main(["--dataset", "kmnist", "--root", str(tmp_path)])
