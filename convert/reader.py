"""Reading PyTorch checkpoints as numpy, without torch for safetensors.

Supported layouts of a HF checkpoint directory, in this order of preference:
- ``model.safetensors``;
- sharded safetensors: ``model.safetensors.index.json`` naming ``model-0000X-of-0000N.safetensors`` files;
- ``pytorch_model.bin`` (or its sharded index), only through ``torch.load(weights_only=True)``, which refuses to
  unpickle arbitrary objects, and only when torch is installed.

Safetensors files are parsed here directly (an 8-byte header size, a JSON header, raw little-endian data) and
memory-mapped, so tensors are read lazily and bfloat16 works (numpy itself has no bfloat16; ``ml_dtypes`` does).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file that is missing, malformed, or not what the model needs."""


_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class SafetensorsFile(Mapping):
    """A read-only ``{name: np.ndarray}`` view of one ``.safetensors`` file; arrays are memory-mapped views."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise CheckpointError(f"{self.path}: too short to be a safetensors file ({size} bytes)")
                (header_len,) = struct.unpack("<Q", f.read(8))
                if header_len > size - 8:
                    raise CheckpointError(f"{self.path}: safetensors header size {header_len} exceeds the file")
                try:
                    header = json.loads(f.read(header_len))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise CheckpointError(f"{self.path}: malformed safetensors header ({e})") from None
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no such file") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        self._entries = {}
        for name, info in header.items():
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except KeyError as e:
                raise CheckpointError(f"{self.path}: tensor {name!r} has an unsupported or missing {e}") from None
            if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)) or self._data_start + end > size:
                raise CheckpointError(f"{self.path}: tensor {name!r} has inconsistent offsets for shape {shape}")
            self._entries[name] = (dtype, shape, begin)

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, begin = self._entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=self._data_start + begin).reshape(shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class ShardedCheckpoint(Mapping):
    """``{name: np.ndarray}`` over several files, following a HF ``*.index.json`` weight map."""

    def __init__(self, files: Mapping[str, Mapping], weight_map: Mapping[str, str], index_path: str):
        self._files = files
        self._weight_map = dict(weight_map)
        self.path = index_path
        for name, file in self._weight_map.items():
            if name not in files[file]:
                raise CheckpointError(f"{index_path}: tensor {name!r} is listed for {file} but that file lacks it")
        for file, tensors in files.items():
            for name in tensors:
                owner = self._weight_map.get(name)
                if owner is None:
                    raise CheckpointError(
                        f"{os.path.join(os.path.dirname(index_path), file)}: tensor {name!r} is "
                        f"not in the index {index_path}"
                    )
                if owner != file:
                    raise CheckpointError(f"tensor {name!r} appears in both {owner} and {file}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self._files[self._weight_map[name]][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._weight_map)

    def __len__(self) -> int:
        return len(self._weight_map)


def _read_index(index_path: str, opener) -> ShardedCheckpoint:
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: malformed index ({type(e).__name__}: {e})") from None
    folder = os.path.dirname(index_path)
    files = {}
    for file in sorted(set(weight_map.values())):
        if os.path.basename(file) != file:
            raise CheckpointError(f"{index_path}: shard name {file!r} must be a plain file name")
        files[file] = opener(os.path.join(folder, file))
    return ShardedCheckpoint(files, weight_map, index_path)


def _torch_load(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs torch (pip install torch); "
            "or convert the checkpoint to safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many kinds; the one-line message is what the user needs
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused the file ({type(e).__name__}: {first_line})"
        ) from None
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype == torch.bfloat16:
            out[name] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[name] = tensor.numpy()
    return out


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """All tensors of a HF checkpoint directory (or a single ``.safetensors``/``.bin`` file), as numpy arrays.

    Returns a read-only mapping from HF parameter names to arrays (memory-mapped for safetensors).
    Raises :class:`CheckpointError` naming the file when nothing usable is found or a file is malformed.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".safetensors"):
            return SafetensorsFile(path)
        if path.endswith(".bin"):
            return _torch_load(path)
        if path.endswith(".index.json"):
            return _read_index(path, SafetensorsFile if "safetensors" in path else _torch_load)
        raise CheckpointError(f"{path}: not a .safetensors, .bin or .index.json file")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    candidates = (
        ("model.safetensors", SafetensorsFile),
        ("model.safetensors.index.json", lambda p: _read_index(p, SafetensorsFile)),
        ("pytorch_model.bin", _torch_load),
        ("pytorch_model.bin.index.json", lambda p: _read_index(p, _torch_load)),
    )
    for name, opener in candidates:
        file = os.path.join(path, name)
        if os.path.exists(file):
            return opener(file)
    raise CheckpointError(
        f"{path}: no weights found (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )
