"""CIFAR-10 as uint8 tensors, a synthetic stand-in, and a loader that augments on the device.

`load_cifar10` finds the data (cache, official batches, a user-given archive or image-folder tree,
or a torchvision download), converts it once to uint8 tensors and caches them in
`<root>/cifar10-uint8.pt`. `DeviceLoader` keeps a whole split on the device and yields
normalised, optionally augmented batches whose order and augmentation depend only on
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import io
import lzma
import math
import os
import pickle
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from .utils import atomic_save

__all__ = ["CIFAR10_CLASSES", "MEAN_STD", "DataError", "Split", "CIFAR10", "load_cifar10", "fingerprint",
           "synthetic_cifar10", "subset", "take", "DeviceLoader"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

# Per-channel (mean, std) of pixels in [0, 1]. The authors' code normalised CIFAR-10 with the
# ImageNet statistics; "cifar10" are the statistics of the CIFAR-10 training set.
MEAN_STD = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}

CACHE_NAME = "cifar10-uint8.pt"
ENV_VAR = "QNETS_CIFAR10"
_SPLITS = ("train", "test")
_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_SKIP_SUFFIXES = {".md", ".txt", ".rst", ".json", ".csv"}  # notes that may sit beside images
_SIDE = 32
_TEMPLATE_SIDE = 40  # synthetic class templates, of which each image is a random 32×32 window
CIFAR10_TRAIN_IMAGES = 50_000
PAD = 4  # random crops: a 32×32 window of the image zero-padded by PAD pixels on each side


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


@dataclass
class CIFAR10:
    """Both splits and `source`, a short description of where the data came from; `cache` is
    the cache file holding this copy, or None where none could be written."""
    train: Split
    test: Split
    source: str
    cache: Path | None = None


def fingerprint(data: CIFAR10) -> str:
    """16 hex digits identifying the exact images and labels of both splits (after any subset),
    whatever file or folder they came from."""
    import hashlib
    h = hashlib.blake2b(digest_size=8)
    for split in (data.train, data.test):
        h.update(repr((tuple(split.images.shape), tuple(split.labels.shape))).encode())
        h.update(split.images.contiguous().numpy().tobytes())
        h.update(split.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _seed(*keys: int) -> int:
    """Return a 64-bit seed mixed from the non-negative integers `keys` (one stream per tuple)."""
    if any(int(k) != k or k < 0 for k in keys):
        raise ValueError(f"seeds and epochs must be non-negative integers, got {keys}")
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*keys))


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
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * _SIDE * _SIDE or not len(data):
        raise DataError(f"{name}: data is {data.dtype} of shape {data.shape}; expected N×3072 uint8 "
                        "(one channel-major 32×32 RGB image per row, N > 0)")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{name}: labels must be {len(data)} integers in 0..9, "
                        f"got {labels.dtype} of shape {labels.shape}")
    images = torch.from_numpy(data.reshape(-1, 3, _SIDE, _SIDE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _from_batches(blobs: dict[str, bytes]) -> tuple[Split, Split]:
    """Return (train, test) from the six official batch files given as bytes by name."""
    missing = [b for b in _BATCHES if b not in blobs]
    if missing:
        raise DataError(f"official batch file(s) missing: {', '.join(missing)}")
    parts = [_read_batch(blobs[b], b) for b in _BATCHES]
    train = Split(torch.cat([p[0] for p in parts[:5]]), torch.cat([p[1] for p in parts[:5]]))
    return train, Split(*parts[5])


def _batches_dir(path: Path) -> tuple[Split, Split]:
    return _from_batches({b: (path / b).read_bytes() for b in _BATCHES if (path / b).is_file()})


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
            if size == (_SIDE, _SIDE):
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
        arr = np.empty((sum(map(len, files)), _SIDE, _SIDE, 3), np.uint8)
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


def _from_archive(path: Path) -> tuple[Split, Split, str]:
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
                if parts and parts[-1] in _BATCHES:
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


def _from_source(path: Path) -> tuple[Split, Split, str]:
    """Return (train, test, source description) from a user-given file or directory."""
    if not path.exists():
        raise DataError("does not exist")
    if path.is_file():
        train, test, kind = _from_archive(path)
        return train, test, f"{kind} {path.name}"
    for d in (path, path / "cifar-10-batches-py"):
        if any((d / b).is_file() for b in _BATCHES):
            return *_batches_dir(d), f"official python batches at {d}"
    entries = []
    for folder, _, names in os.walk(path, followlinks=True):  # symlinked class folders count
        rel = Path(folder).relative_to(path).parts
        entries += [(rel + (n,), Path(folder, n)) for n in names if _tree_entry(rel + (n,))]
    if not entries:
        raise _no_data()
    return *_from_tree(entries, str(path)), f"image-folder tree {path}"


# ---------------------------------------------------------------------------------------------
# Cache and the public loader

def _read_cache(path: Path) -> tuple[CIFAR10, str | None]:
    """The cached data and the origin it was converted from (None: not recorded)."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or d.get("format") != 1 or not isinstance(d.get("source"), str):
        raise ValueError("not a qnets CIFAR-10 cache (format 1)")
    return CIFAR10(Split(d["train_images"], d["train_labels"]),
                   Split(d["test_images"], d["test_labels"]), d["source"], path), d.get("origin")


def _origin(path: Path) -> str:
    """Identity of a user-given source: its resolved path, and size and modification time for a file."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return f"{path} ({st.st_size} bytes, modified {st.st_mtime_ns})"
    return str(path)


def _write_cache(path: Path, data: CIFAR10, origin: str | None) -> CIFAR10:
    """Write `data` to `path` atomically; a failure to write only costs the speed-up (and is said)."""
    blob = {"format": 1, "source": data.source, "origin": origin,
            "train_images": data.train.images, "train_labels": data.train.labels,
            "test_images": data.test.images, "test_labels": data.test.labels}
    try:
        atomic_save(blob, path)
        data.cache = path
    except OSError as e:
        warnings.warn(f"could not write the CIFAR-10 cache {path} ({e.strerror or e}); "
                      "it will be converted again next time")
    return data


def _help(root: Path) -> str:
    return (f"Provide CIFAR-10 in one of three ways:\n"
            f"  (1) let torchvision download it into {root} (needs internet): "
            f"load_cifar10({str(root)!r}, download=True);\n"
            f"  (2) put the official cifar-10-python.tar.gz, or its extracted cifar-10-batches-py "
            f"folder, into {root}, or pass its path as source=;\n"
            f"  (3) point the environment variable {ENV_VAR} (or source=) at an image-folder tree "
            f"with train/<class>/ and test/<class>/ (class folders {', '.join(CIFAR10_CLASSES)}), "
            f"or at its .tar/.tar.gz/.tar.xz archive.")


def load_cifar10(root="data", source=None, download: bool = True) -> CIFAR10:
    """Return CIFAR-10 as uint8 tensors (50,000 train and 10,000 test images, labels 0-9).

    A source you name wins: `source` (else the environment variable QNETS_CIFAR10), an official
    archive or batches folder, an image-folder tree `train/<class>/*`, `test/<class>/*`, or a
    .tar/.tar.gz/.tgz/.tar.xz archive of one, is read unless the cache `<root>/cifar10-uint8.pt`
    was made from that very file. With no source named: the cache; the official batches in
    `<root>/cifar-10-batches-py` or `<root>/cifar-10-python.tar.gz`; finally, if `download`, a
    torchvision download into `root`. Whatever is converted is cached atomically. Raises
    DataError listing every attempt and the ways out.
    """
    root = Path(root)
    cache, tried = root / CACHE_NAME, []
    given = source or os.environ.get(ENV_VAR) or None
    origin = _origin(Path(given)) if given is not None and Path(given).exists() else None
    if cache.is_file():
        try:
            data, cached_from = _read_cache(cache)
            if given is None or cached_from == origin:
                return data
            tried.append(f"cache {cache}: made from {cached_from or data.source}, not from the source given; "
                         "it will be rebuilt from that source")
        except Exception as e:
            tried.append(f"cache {cache}: corrupt ({type(e).__name__}: {e}); it will be rebuilt")
    else:
        tried.append(f"cache {cache}: not found")

    def done(train, test, desc, origin=None):
        return _write_cache(cache, CIFAR10(train, test, desc), origin)

    def fail():
        lines = "\n".join("  - " + " ".join(t.split()) for t in tried)  # one line per attempt
        return DataError(f"Could not load CIFAR-10. Tried, in order:\n{lines}\n{_help(root)}")

    if given is not None:  # a source the user names wins over anything found in root
        try:
            return done(*_from_source(Path(given)), origin=origin)
        except DataError as e:
            tried.append(f"source {given}{'' if source else f' (from {ENV_VAR})'}: {e}")
        tried.append("download: not attempted because a source was given (fix or remove it to download)")
        raise fail()
    batches, archive = root / "cifar-10-batches-py", root / "cifar-10-python.tar.gz"
    for path, reader, desc in ((batches, _batches_dir, f"official python batches at {batches}"),
                               (archive, _from_archive, f"official archive {archive}")):
        if not path.exists():
            tried.append(f"{desc}: not found")
            continue
        try:
            return done(*reader(path)[:2], desc)
        except DataError as e:
            tried.append(f"{desc}: {e}")

    tried.append(f"source: none given (source=None and {ENV_VAR} unset)")
    if not download:
        tried.append("download: not attempted (download=False)")
        raise fail()
    try:
        import torchvision.datasets
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        train, test = _batches_dir(batches)
    except Exception as e:
        tried.append(f"download: failed ({type(e).__name__}: {str(e)[:300]})")
        raise fail() from None
    return done(train, test, f"official python batches downloaded by torchvision into {batches}")


# ---------------------------------------------------------------------------------------------
# Synthetic data

def _synthetic_split(n: int, templates, stripes, g: torch.Generator) -> Split:
    """Return `n` balanced images drawn from the class `templates` (10×3×40×40) and `stripes`."""
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    off = torch.randint(0, _TEMPLATE_SIDE - _SIDE + 1, (n, 2), generator=g)  # where the window sits
    ar = torch.arange(_SIDE)
    rows, cols = off[:, :1] + ar, off[:, 1:] + ar
    base = templates[labels[:, None, None, None], torch.arange(3)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
    angle, freq, colour = stripes
    y, x = torch.meshgrid(ar.float(), ar.float(), indexing="ij")
    a, f = angle[labels][:, None, None], freq[labels][:, None, None]
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    wave = torch.cos(2 * math.pi * f * (x * a.cos() + y * a.sin()) / _SIDE + phase)
    img = 0.5 * base + 0.5 + 0.3 * wave[:, None] * colour[labels][:, :, None, None]
    gain = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)  # brightness jitter
    img = gain * (img - 0.5) + 0.5 + 0.15 * torch.randn(img.shape, generator=g)
    return Split((img * 255).round().clamp(0, 255).to(torch.uint8), labels)


def synthetic_cifar10(n_train: int = 2000, n_test: int = 500, seed: int = 0) -> CIFAR10:
    """Return a deterministic synthetic CIFAR-10 look-alike (uint8 N×3×32×32, balanced labels).

    Each class has a smooth random colour template and oriented colour stripes of its own
    angle and frequency; each image gets a random shift, stripe phase, brightness and noise.
    A tiny CNN learns it well above chance within a couple of epochs. Same seed, same tensors;
    the train and test sets come from independent streams, so n_test does not change train.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    g = _generator(seed, 0)
    coarse = 0.6 * torch.rand(10, 3, 1, 1, generator=g) + 0.8 * torch.rand(10, 3, 5, 5, generator=g) - 0.7
    templates = F.interpolate(coarse, size=(_TEMPLATE_SIDE, _TEMPLATE_SIDE), mode="bicubic", align_corners=False)
    angle = (torch.arange(10) + torch.rand(10, generator=g) * 0.5) * math.pi / 10
    freq = 1.5 + 3.0 * torch.rand(10, generator=g)
    colour = F.normalize(torch.randn(10, 3, generator=g), dim=1)
    stripes = (angle, freq, colour)
    return CIFAR10(_synthetic_split(n_train, templates, stripes, _generator(seed, 1)),
                   _synthetic_split(n_test, templates, stripes, _generator(seed, 2)),
                   f"synthetic(seed={seed})")


# ---------------------------------------------------------------------------------------------
# Subsets

def subset(split: Split, n: int, seed: int = 0) -> Split:
    """Return a stratified random subset of `n` images, kept in their original order.

    Each class present gets n // k images (k classes); the n % k left over go one each to the
    lowest-numbered classes. Which images a class gives is a permutation seeded by `seed`.
    """
    if not 0 < n <= len(split):
        raise ValueError(f"subset: n={n} must be between 1 and the split's size {len(split)}")
    labels = split.labels.cpu()
    classes = labels.unique().tolist()
    base, extra = divmod(n, len(classes))
    g, picks = _generator(seed), []
    for i, c in enumerate(classes):
        idx = (labels == c).nonzero().flatten()
        want = base + (i < extra)
        if want > len(idx):
            raise ValueError(f"subset: n={n} needs {want} images of class {c}, which has only {len(idx)}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:want]])
    keep = torch.cat(picks).sort().values.to(split.labels.device)
    return Split(split.images[keep], split.labels[keep])


def take(data: CIFAR10, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> CIFAR10:
    """Return `data` with each split replaced by `subset(split, n, seed)` where n is given."""
    train = data.train if n_train is None else subset(data.train, n_train, seed)
    test = data.test if n_test is None else subset(data.test, n_test, seed)
    if n_train is None and n_test is None:
        return data
    return CIFAR10(train, test, f"{data.source}, subset(train={n_train}, test={n_test}, seed={seed})")


# ---------------------------------------------------------------------------------------------
# Loader

class DeviceLoader:
    """Batches of one split, kept as uint8 on `device`, normalised (and augmented) there.

    Training order, crop offsets (a 32×32 window of the image zero-padded by 4 pixels) and
    horizontal flips of epoch e are drawn from a CPU generator seeded from (seed, e) alone, so
    any epoch can be replayed exactly without saved RNG state. Test mode: in order, unaugmented.
    """

    def __init__(self, split: Split, batch_size: int, *, train: bool, device="cpu", seed: int = 0,
                 normalize: str | None = "cifar10", augment: bool | None = None,
                 drop_last: bool | None = None, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32):
        if normalize is not None and normalize not in MEAN_STD:
            raise ValueError(f"normalize must be one of {sorted(MEAN_STD)} or None, got {normalize!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size, self.train, self.seed = int(batch_size), bool(train), seed
        self.augment = self.train if augment is None else bool(augment)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last, self.dtype, self.device = channels_last, dtype, torch.device(device)
        self.images = split.images.to(self.device).contiguous()  # moved once, kept as uint8
        self.labels = split.labels.to(self.device)
        self.n = len(split)
        if len(self) == 0:
            raise ValueError(f"no batches: {self.n} samples, batch_size={batch_size}, "
                             f"drop_last={self.drop_last}; use a smaller batch_size or drop_last=False")
        mean, std = MEAN_STD[normalize] if normalize else ((0.0,) * 3, (1.0,) * 3)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        """Return the number of batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        return self.epoch(0)

    def draw(self, e: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The order of epoch `e` and its augmentation (crop offsets N×2, flips N), or None
        without augmentation; drawn on the CPU from (seed, e) alone, returned on the device."""
        g = _generator(self.seed, e)
        order = torch.randperm(self.n, generator=g) if self.train else torch.arange(self.n)
        aug = None
        if self.augment:  # drawn for the whole epoch at once, then moved to the device
            off = torch.randint(0, 2 * PAD + 1, (self.n, 2), generator=g)
            flip = torch.rand(self.n, generator=g) < 0.5
            aug = off.to(self.device), flip.to(self.device)
        return order.to(self.device), aug

    def epoch(self, e: int):
        """Return an iterator over the (x, y) batches of epoch `e` (x float `dtype`, y int64)."""
        return self._batches(*self.draw(e))

    def normalise(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, scaled to [0, 1] and normalised with this loader's statistics."""
        return u8.float().div_(255).sub_(self.mean).div_(self.std)

    def _batches(self, order, aug):
        for b in range(len(self)):
            s = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[s]
            u8 = self.images[idx]
            if aug is not None:
                u8 = self._crop_flip(u8, aug[0][s], aug[1][s])
            x = self.normalise(u8)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x.to(self.dtype), self.labels[idx]

    @staticmethod
    def _crop_flip(u8, off, flip):
        """Return crops of `u8` zero-padded by 4 at offsets `off` (B×2), mirrored where `flip`."""
        n, c, h, w = u8.shape
        padded = F.pad(u8, (PAD,) * 4)  # zeros in pixel space, like RandomCrop(padding=4)
        rows = off[:, :1] + torch.arange(h, device=u8.device)
        cols = off[:, 1:] + torch.arange(w, device=u8.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        return padded[torch.arange(n, device=u8.device)[:, None, None, None],
                      torch.arange(c, device=u8.device)[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]
