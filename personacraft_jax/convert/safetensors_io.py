"""Reading and writing safetensors files as numpy arrays (bf16 included), never unpickling anything.

The reader parses the safetensors header itself so that bfloat16 tensors (which numpy cannot name)
come back as `ml_dtypes.bfloat16` arrays, memory-mapped from the file.
"""

from __future__ import annotations

import json
import mmap
import os
import pathlib
import struct
import tempfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import safetensors.numpy

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class WeightFileError(ValueError):
    """A weights file that cannot be read safely or is malformed."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Returns every tensor of a .safetensors file as a read-only numpy array (memory-mapped)."""
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if len(buffer) < 8:
        raise WeightFileError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (header_len,) = struct.unpack("<Q", buffer[:8])
    if 8 + header_len > len(buffer):
        raise WeightFileError(f"{path}: header length {header_len} exceeds the file size {len(buffer)}")
    try:
        header = json.loads(buffer[8 : 8 + header_len])
    except json.JSONDecodeError as e:
        raise WeightFileError(f"{path}: malformed safetensors header ({e})") from None
    header.pop("__metadata__", None)
    start = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise WeightFileError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise WeightFileError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']}")
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes fp32 / fp16 / integer numpy arrays to `path` atomically (temp file + rename)."""
    path = pathlib.Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(arrays, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
