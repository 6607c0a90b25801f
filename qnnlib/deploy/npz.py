"""Reading an uncompressed .npz without trusting it (the BinaryMLP file, `fileformat`).

The zip directory is checked before any member is opened: no duplicate or compressed
members, none declaring more bytes than the file holds (so a declared size is bytes on
disk, never a zip bomb's promise). A member's .npy header is read before its data: object
arrays (which would be unpickled) are refused, and the bytes the header claims must be
exactly what the member holds, so a header claiming a huge shape allocates nothing.
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

# np.save writes .npy headers of about 128 bytes; this bounds what a member may add to its data.
NPY_HEADER_BYTES = 4096
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}


class Unreadable(Exception):
    """The archive is damaged, or not the plain (uncompressed) .npz a BinaryMLP file is."""


def members(archive) -> dict:
    """Array name -> ZipInfo, from the zip directory alone. Members must be stored
    uncompressed, within the file: each one's declared size is then bytes on disk, never
    a zip bomb's promise."""
    file_bytes = os.fstat(archive.fp.fileno()).st_size
    found = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name in found:
            raise Unreadable(f"the archive lists {info.filename} twice")
        if info.compress_type != zipfile.ZIP_STORED:
            raise Unreadable(
                f"{info.filename} is compressed (zip method {info.compress_type}); a BinaryMLP "
                "file is an uncompressed .npz, as BinaryMLP.save (or np.savez) writes it")
        if info.compress_size != info.file_size or info.header_offset + info.file_size > file_bytes:
            raise Unreadable(f"{info.filename} declares {info.file_size} bytes, which the "
                             f"{file_bytes}-byte file does not hold")
        found[name] = info
    return found


def check_size(info, name, data_bytes) -> None:
    """A member may hold its data and one .npy header, nothing more."""
    if info.file_size > data_bytes + NPY_HEADER_BYTES:
        raise ValueError(f"{name} holds {info.file_size} bytes, more than the {data_bytes} data "
                         f"bytes its shape needs plus a .npy header; refused unread")


def read_member(archive, info, name, dtype, shape=None, max_bytes=None) -> np.ndarray:
    """Member `name` as an array of `dtype` and `shape` (or any 1-D shape of at most
    `max_bytes` elements), checked from its .npy header before its data is read."""
    with archive.open(info) as stream:
        found_shape, fortran, found_dtype = npy_header(stream, name)
        if shape is None:
            if found_dtype != dtype or len(found_shape) != 1 or found_shape[0] > max_bytes:
                raise ValueError(f"{name} must be 1-D {np.dtype(dtype).name} of at most {max_bytes} "
                                 f"elements, got {found_dtype} {found_shape}")
        elif found_dtype != dtype or found_shape != shape:
            raise ValueError(f"{name} is {found_dtype} {found_shape}, expected "
                             f"{np.dtype(dtype).name} {shape}")
        return npy_data(stream, name, info.file_size, found_shape, fortran, found_dtype)


def npy_header(stream, name) -> tuple:
    """(shape, fortran_order, dtype) from a member's .npy header; no data is read."""
    version = np.lib.format.read_magic(stream)
    if version not in NPY_HEADERS:
        raise ValueError(f"{name} is a .npy of version {version}, expected 1.0 or 2.0")
    shape, fortran, dtype = NPY_HEADERS[version](stream, max_header_size=NPY_HEADER_BYTES)
    if dtype.hasobject:
        raise ValueError(f"{name} holds Object arrays (pickled data), refused unread")
    return shape, fortran, dtype


def npy_data(stream, name, member_bytes, shape, fortran, dtype) -> np.ndarray:
    """The array after the header, once the bytes its header claims are exactly what the
    member holds (so a header claiming a huge shape allocates nothing)."""
    data_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    if stream.tell() + data_bytes != member_bytes:
        raise ValueError(f"{name}'s header claims {data_bytes} data bytes for shape {shape}, "
                         f"but the member holds {member_bytes - stream.tell()}")
    data = stream.read(data_bytes)
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()
