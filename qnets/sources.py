"""Reading CIFAR-10 from what a user has: the official python batches (a folder or the
official archive), or an image-folder tree `train/<class>/*`, `test/<class>/*` (a folder, or a
.tar/.tar.gz/.tgz/.tar.xz archive of one). Each reader returns (train, test, description) as
uint8 tensors; `qnets.data.load_cifar10` decides which to use and caches the result.
"""
from __future__ import annotations

import io
import lzma
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch


__all__ = ["CIFAR10_CLASSES", "SIDE", "DataError", "Split", "BATCHES", "read_source", "read_archive",
           "read_batches_dir"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

SIDE = 32  # pixels: CIFAR-10 images are SIDE×SIDE


class DataError(RuntimeError):
    """CIFAR-10 could not be found or read; the message says what was tried and what to do."""


@dataclass
class Split:
    """One split: `images` uint8 N×3×H×W (contiguous), `labels` int64 N."""
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        im, lb = self.images, self.labels
        if im.dtype != torch.uint8 or im.dim() != 4 or im.shape[1] != 3:
            raise ValueError(f"Split.images must be uint8 N×3×H×W, got {im.dtype} {tuple(im.shape)}")
        if lb.dtype != torch.int64 or lb.shape != (im.shape[0],):
            raise ValueError(f"Split.labels must be int64 of shape ({im.shape[0]},), "
                             f"got {lb.dtype} {tuple(lb.shape)}")
        self.images = im.contiguous()

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device) -> Split:
        """Return a new Split with both tensors on `device`."""
        return Split(self.images.to(device), self.labels.to(device))

_SPLITS = ("train", "test")
BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)  # the official files
_SKIP_SUFFIXES = {".md", ".txt", ".rst", ".json", ".csv"}  # notes that may sit beside images


# ---------------------------------------------------------------------------------------------
# Reading the official python batches

class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays: a batch file cannot run code."""
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(blob: bytes, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 N×3×32×32, labels int64 N) from one pickled official batch."""
    try:
        d = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"{name}: not a readable CIFAR-10 batch pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{name}: expected a dict with keys b'data' and b'labels', found {keys}")
    data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or not len(data):
        raise DataError(f"{name}: data is {data.dtype} of shape {data.shape}; expected N×3072 uint8 "
                        "(one channel-major 32×32 RGB image per row, N > 0)")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{name}: labels must be {len(data)} integers in 0..9, "
                        f"got {labels.dtype} of shape {labels.shape}")
    images = torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _from_batches(blobs: dict[str, bytes]) -> tuple[Split, Split]:
    """Return (train, test) from the six official batch files given as bytes by name."""
    missing = [b for b in BATCHES if b not in blobs]
    if missing:
        raise DataError(f"official batch file(s) missing: {', '.join(missing)}")
    parts = [_read_batch(blobs[b], b) for b in BATCHES]
    train = Split(torch.cat([p[0] for p in parts[:5]]), torch.cat([p[1] for p in parts[:5]]))
    return train, Split(*parts[5])


def read_batches_dir(path: Path) -> tuple[Split, Split]:
    return _from_batches({b: (path / b).read_bytes() for b in BATCHES if (path / b).is_file()})


# ---------------------------------------------------------------------------------------------
# Reading an image-folder tree (a directory or a tar archive of one)

def _tree_entry(parts: tuple[str, ...]):
    """Return (prefix, split, class_folder, file_name) if `parts` ends in <split>/<class>/<file>
    and the file is not a hidden file or a note; else None."""
    if len(parts) < 3 or parts[-3] not in _SPLITS:
        return None
    name = parts[-1]
    if name.startswith(".") or PurePosixPath(name).suffix.lower() in _SKIP_SUFFIXES:
        return None
    return parts[:-3], parts[-3], parts[-2], name


def _decode(payload, where: str) -> np.ndarray:
    """Return one 32×32 image as a 32×32×3 uint8 array; `payload` is a path or the file's bytes."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload) as im:
            size = im.size
            if size == (SIDE, SIDE):
                return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise DataError(f"{where}: not an image Pillow can read ({type(e).__name__}: {e}); "
                        "remove it from the class folder") from None
    raise DataError(f"{where}: image is {size[0]}x{size[1]}, expected 32x32")


def _from_tree(entries: list, label: str) -> tuple[Split, Split]:
    """Return (train, test) from `entries` = [(parts, payload)] of files under <split>/<class>/."""
    groups, folders, prefixes = {}, {s: set() for s in _SPLITS}, set()
    for parts, payload in entries:
        prefix, split, cls, name = _tree_entry(parts)
        folders[split].add(cls)
        if cls in CIFAR10_CLASSES:
            prefixes.add(prefix)
            groups.setdefault((split, cls), []).append((name, "/".join(parts), payload))
    if len(prefixes) > 1:
        where = ", ".join(sorted("/".join(p) or "." for p in prefixes))
        raise DataError(f"found train/ and test/ class folders under several folders ({where}); "
                        "point the source at one of them")
    out = []
    for split in _SPLITS:
        missing = [c for c in CIFAR10_CLASSES if (split, c) not in groups]
        if missing:
            raise DataError(f"{split}/: no images for class(es) {', '.join(missing)} (class folder "
                            f"missing or empty; found folders: {', '.join(sorted(folders[split])) or 'none'}); "
                            f"expected {split}/<class>/ for each of {', '.join(CIFAR10_CLASSES)}")
        files = [sorted(groups[split, c]) for c in CIFAR10_CLASSES]  # by file name within a class
        arr = np.empty((sum(map(len, files)), SIDE, SIDE, 3), np.uint8)
        for i, (_, where, payload) in enumerate(f for fs in files for f in fs):
            arr[i] = _decode(payload, f"{label}:{where}")
        counts = {c: len(fs) for c, fs in zip(CIFAR10_CLASSES, files)}
        if len(set(counts.values())) != 1:
            raise DataError(f"{split}/: classes have unequal numbers of images {counts}; "
                            "every class needs the same count")
        labels = torch.arange(10).repeat_interleave(torch.tensor([len(fs) for fs in files]))
        out.append(Split(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), labels))
    return out[0], out[1]


def _no_data() -> DataError:
    return DataError("found neither an image-folder tree (train/<class>/<file> and "
                     "test/<class>/<file>) nor the official batches (data_batch_1..5, test_batch)")


def read_archive(path: Path) -> tuple[Split, Split, str]:
    """Return (train, test, kind) streamed from a tar archive, without extracting it to disk."""
    blobs, entries = {}, []
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"not a readable archive (not a tar, .tar.gz, .tar.bz2 or .tar.xz file, or corrupt: "
                        f"{type(e).__name__})") from None
    try:
        with tf:
            for m in tf:  # sequential: xz cannot seek cheaply
                if not m.isfile():
                    continue
                parts = PurePosixPath(m.name).parts
                if parts and parts[-1] in BATCHES:
                    if parts[-1] in blobs:
                        raise DataError(f"archive holds {parts[-1]} more than once")
                    blobs[parts[-1]] = tf.extractfile(m).read()
                elif (e := _tree_entry(parts)) is not None:
                    entries.append((parts, tf.extractfile(m).read() if e[2] in CIFAR10_CLASSES else None))
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"not a readable archive ({type(e).__name__}: {e})") from None
    if blobs:
        return *_from_batches(blobs), "official archive"
    if entries:
        return *_from_tree(entries, path.name), "image-folder archive"
    raise _no_data()


def read_source(path: Path) -> tuple[Split, Split, str]:
    """Return (train, test, source description) from a user-given file or directory."""
    if not path.exists():
        raise DataError("does not exist")
    if path.is_file():
        train, test, kind = read_archive(path)
        return train, test, f"{kind} {path.name}"
    for d in (path, path / "cifar-10-batches-py"):
        if any((d / b).is_file() for b in BATCHES):
            return *read_batches_dir(d), f"official python batches at {d}"
    entries = []
    for folder, _, names in os.walk(path, followlinks=True):  # symlinked class folders count
        rel = Path(folder).relative_to(path).parts
        entries += [(rel + (n,), Path(folder, n)) for n in names if _tree_entry(rel + (n,))]
    if not entries:
        raise _no_data()
    return *_from_tree(entries, str(path)), f"image-folder tree {path}"
