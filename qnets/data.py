"""CIFAR-10 as uint8 tensors, a synthetic stand-in, and a loader that augments on the device.

`load_cifar10` finds the data (cache, official batches, a user-given archive or image-folder tree
read by `qnets.sources`, or a torchvision download), converts it once to uint8 tensors and caches them in
`<root>/cifar10-uint8.pt`. `DeviceLoader` keeps a whole split on the device and yields
normalised, optionally augmented batches whose order and augmentation depend only on
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import sources
from .sources import CIFAR10_CLASSES, SIDE, DataError, Split
from .utils import atomic_save

__all__ = ["CIFAR10_CLASSES", "MEAN_STD", "DataError", "Split", "CIFAR10", "load_cifar10", "fingerprint",
           "synthetic_cifar10", "subset", "take", "DeviceLoader"]

# Per-channel (mean, std) of pixels in [0, 1]. The authors' code normalised CIFAR-10 with the
# ImageNet statistics; "cifar10" are the statistics of the CIFAR-10 training set.
MEAN_STD = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}

CACHE_NAME = "cifar10-uint8.pt"
ENV_VAR = "QNETS_CIFAR10"
_TEMPLATE_SIDE = 40  # synthetic class templates, of which each image is a random 32×32 window
CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES = 50_000, 10_000
PAD = 4  # random crops: a 32×32 window of the image zero-padded by PAD pixels on each side


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


def _cached(cache: Path, given: str | None, origin: str | None, tried: list[str]) -> CIFAR10 | None:
    """The cache, when no source is named or it was made from the named one."""
    if not cache.is_file():
        tried.append(f"cache {cache}: not found")
        return None
    try:
        data, cached_from = _read_cache(cache)
    except Exception as e:
        tried.append(f"cache {cache}: corrupt ({type(e).__name__}: {e}); it will be rebuilt")
        return None
    if given is None or cached_from == origin:
        return data
    tried.append(f"cache {cache}: made from {cached_from or data.source}, not from the source given; "
                 "it will be rebuilt from that source")
    return None


def _official_in(root: Path, tried: list[str]) -> tuple[Split, Split, str] | None:
    """The official python batches, unpacked or as the archive, in `root`."""
    batches, archive = root / "cifar-10-batches-py", root / "cifar-10-python.tar.gz"
    for path, reader, desc in ((batches, sources.read_batches_dir, f"official python batches at {batches}"),
                               (archive, sources.read_archive, f"official archive {archive}")):
        if not path.exists():
            tried.append(f"{desc}: not found")
            continue
        try:
            return (*reader(path)[:2], desc)
        except DataError as e:
            tried.append(f"{desc}: {e}")
    return None


def _download(root: Path, tried: list[str]) -> tuple[Split, Split, str] | None:
    batches = root / "cifar-10-batches-py"
    try:
        import torchvision.datasets
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        return (*sources.read_batches_dir(batches), f"official python batches downloaded by torchvision into {batches}")
    except Exception as e:
        tried.append(f"download: failed ({type(e).__name__}: {str(e)[:300]})")
        return None


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
    root, tried = Path(root), []
    cache = root / CACHE_NAME
    given = source or os.environ.get(ENV_VAR) or None
    origin = _origin(Path(given)) if given is not None and Path(given).exists() else None
    data = _cached(cache, given, origin, tried)
    if data is not None:
        return data
    if given is not None:  # a source the user names wins over anything found in root
        try:
            return _write_cache(cache, CIFAR10(*sources.read_source(Path(given))), origin)
        except DataError as e:
            tried.append(f"source {given}{'' if source else f' (from {ENV_VAR})'}: {e}")
        tried.append("download: not attempted because a source was given (fix or remove it to download)")
    else:
        found = _official_in(root, tried)
        tried.append(f"source: none given (source=None and {ENV_VAR} unset)")
        if found is None and not download:
            tried.append("download: not attempted (download=False)")
        found = found or (_download(root, tried) if download else None)
        if found is not None:
            return _write_cache(cache, CIFAR10(*found), None)
    lines = "\n".join("  - " + " ".join(t.split()) for t in tried)  # one line per attempt
    raise DataError(f"Could not load CIFAR-10. Tried, in order:\n{lines}\n{_help(root)}")


# ---------------------------------------------------------------------------------------------
# Synthetic data

def _synthetic_split(n: int, templates, stripes, g: torch.Generator) -> Split:
    """Return `n` balanced images drawn from the class `templates` (10×3×40×40) and `stripes`."""
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    off = torch.randint(0, _TEMPLATE_SIDE - SIDE + 1, (n, 2), generator=g)  # where the window sits
    ar = torch.arange(SIDE)
    rows, cols = off[:, :1] + ar, off[:, 1:] + ar
    base = templates[labels[:, None, None, None], torch.arange(3)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
    angle, freq, colour = stripes
    y, x = torch.meshgrid(ar.float(), ar.float(), indexing="ij")
    a, f = angle[labels][:, None, None], freq[labels][:, None, None]
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    wave = torch.cos(2 * math.pi * f * (x * a.cos() + y * a.sin()) / SIDE + phase)
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
