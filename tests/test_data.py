import contextlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qnets import data as D
from qnets import sources
from qnets.data import (CIFAR10_CLASSES, MEAN_STD, DataError, DeviceLoader, Split, load_cifar10,
                        subset, synthetic_cifar10, take)

REAL_ENV = os.environ.get("QNETS_CIFAR10")  # read before the autouse fixture clears it
REPO = Path(__file__).resolve().parents[1]
OFFLINE_COPY = Path(__file__).resolve().parents[2] / "shared/data/cifar10/cifar10-jpeg.tar.xz"
PER_CLASS = 3


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("QNETS_CIFAR10", raising=False)


@pytest.fixture
def no_download(monkeypatch):
    """torchvision's CIFAR10 replaced by a stub that records calls and fails like an offline machine."""
    import torchvision.datasets
    calls = []

    def offline(root, train=True, download=False, **kw):
        calls.append(root)
        raise RuntimeError("offline: no route to host")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    return calls


# ---------------------------------------------------------------------------------------------
# Builders of tiny sources with known pixels

def pixels(split, label, i):
    """A distinct, reproducible 32×32×3 uint8 image for (split, class, index)."""
    k = (split == "test") * 97 + label * 13 + i * 5
    return ((np.arange(32 * 32 * 3).reshape(32, 32, 3) * (k % 7 + 1) + k) % 256).astype(np.uint8)


def expected_tree(n=PER_CLASS):
    out = []
    for split in ("train", "test"):
        imgs = [pixels(split, c, i) for c in range(10) for i in range(n)]
        out.append((torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(),
                    torch.arange(10).repeat_interleave(n)))
    return out


def make_tree(base: Path, n=PER_CLASS) -> Path:
    """An image-folder tree with PNGs (lossless, so pixels are exact) and stray notes."""
    for split in ("train", "test"):
        for c, name in enumerate(CIFAR10_CLASSES):
            d = base / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pixels(split, c, i)).save(d / f"{i:04d}.png")
    (base / "README.md").write_text("notes")
    (base / "train" / "README.md").write_text("notes")
    (base / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return base


def make_tar(tree: Path, out: Path, prefix="") -> Path:
    """Archive `tree`, members in reverse name order (the loader must sort by name itself)."""
    files = sorted((p for p in tree.rglob("*") if p.is_file()), reverse=True)
    with tarfile.open(out, "w:" + {".gz": "gz", ".xz": "xz", ".tar": ""}[out.suffix]) as tf:
        for p in files:
            tf.add(p, arcname=prefix + p.relative_to(tree).as_posix())
    return out


def fake_batches(seed=0, n=20, rows=3072):
    """Official-format batch pickles (bytes by name) and the expected (train, test) tensors."""
    rng = np.random.default_rng(seed)
    blobs, parts = {}, []
    for name in sources.BATCHES:
        data = rng.integers(0, 256, (n, rows), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        blobs[name] = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                    b"filenames": [b"x.png"] * n}, protocol=2)
        parts.append((torch.from_numpy(data).view(n, 3, 32, 32) if rows == 3072 else None, torch.tensor(labels)))
    if rows != 3072:
        return blobs, None
    train = (torch.cat([p[0] for p in parts[:5]]), torch.cat([p[1] for p in parts[:5]]))
    return blobs, [train, parts[5]]


def write_batches(folder: Path, blobs) -> Path:
    folder.mkdir(parents=True)
    for name, b in blobs.items():
        (folder / name).write_bytes(b)
    return folder


def write_official_tgz(path: Path, blobs) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, b in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    return path


def assert_data(data, expected):
    for split, (images, labels) in zip((data.train, data.test), expected):
        assert split.images.dtype == torch.uint8 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64
        assert torch.equal(split.images, images)
        assert torch.equal(split.labels, labels)


def assert_clean(root: Path):
    """No cache and no temporary file left behind."""
    left = [p.name for p in root.iterdir()] if root.exists() else []
    assert not [n for n in left if "cifar10-uint8" in n], left


@contextlib.contextmanager
def from_cache_only():
    """A context in which every converter fails: what loads comes from the cache."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("read_source", "read_archive", "read_batches_dir"):
            mp.setattr(sources, name, lambda *a, **k: pytest.fail("converted again instead of reading the cache"))
        yield


def assert_cached(root, expected, source):
    """The cache exists and a second call, with the source gone, returns the same data from it."""
    assert (root / D.CACHE_NAME).is_file()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    with from_cache_only():
        again = load_cifar10(root, download=False)
    assert_data(again, expected)
    assert again.source == source


# ---------------------------------------------------------------------------------------------
# Loading from each kind of source

@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "tar.xz", "tgz-prefixed", "tar.xz-prefixed"])
def test_image_folder_sources(tmp_path, kind):
    tree = make_tree(tmp_path / "tree")
    if kind == "dir":
        src, desc = tree, f"image-folder tree {tree}"
    else:
        ext, _, prefixed = kind.partition("-")
        name = "cifar." + ("tgz" if ext == "tgz" else ext)
        out = make_tar(tree, tmp_path / ("cifar." + ("tar.gz" if ext == "tgz" else ext)),
                       prefix="cifar10-jpeg/" if prefixed else "")
        src = out.rename(tmp_path / name)
        desc = f"image-folder archive {name}"
    root = tmp_path / "root" / "nested"  # created on demand
    data = load_cifar10(root, source=str(src), download=False)
    assert_data(data, expected_tree())
    assert data.source == desc
    assert_cached(root, expected_tree(), desc)


def test_tree_ordered_by_file_name_not_listing(tmp_path):
    tree = make_tree(tmp_path / "tree")
    cat = tree / "train" / "cat"  # rename so that creation order differs from name order
    for i in range(PER_CLASS):
        (cat / f"{i:04d}.png").rename(cat / f"{PER_CLASS - 1 - i:04d}.tmp.png")
    for p in cat.glob("*.tmp.png"):
        p.rename(cat / p.name.replace(".tmp", ""))
    data = load_cifar10(tmp_path / "root", source=tree, download=False)
    got = data.train.images[data.train.labels == 3]
    want = [torch.from_numpy(pixels("train", 3, PER_CLASS - 1 - i)).permute(2, 0, 1) for i in range(PER_CLASS)]
    assert torch.equal(got, torch.stack(want))


def test_official_batches_in_root(tmp_path):
    blobs, expected = fake_batches()
    root = tmp_path / "root"
    folder = write_batches(root / "cifar-10-batches-py", blobs)
    data = load_cifar10(root, download=False)
    assert_data(data, expected)
    assert data.source == f"official python batches at {folder}"
    for b in folder.iterdir():
        b.unlink()
    assert_cached(root, expected, data.source)


def test_official_archive_as_source_and_in_root(tmp_path):
    blobs, expected = fake_batches(seed=1)
    tgz = write_official_tgz(tmp_path / "cifar-10-python.tar.gz", blobs)
    data = load_cifar10(tmp_path / "a", source=tgz, download=False)
    assert_data(data, expected)
    assert data.source == "official archive cifar-10-python.tar.gz"
    root = tmp_path / "b"
    root.mkdir()
    tgz.rename(root / tgz.name)
    data = load_cifar10(root, download=False)
    assert_data(data, expected)
    assert data.source == f"official archive {root / tgz.name}"
    (root / tgz.name).unlink()
    assert_cached(root, expected, data.source)


def test_official_batches_folder_as_source(tmp_path):
    blobs, expected = fake_batches(seed=2)
    folder = write_batches(tmp_path / "x" / "cifar-10-batches-py", blobs)
    for src in (folder, folder.parent):
        data = load_cifar10(tmp_path / f"root-{src.name}", source=src, download=False)
        assert_data(data, expected)
        assert data.source == f"official python batches at {folder}"


def test_env_var_is_the_default_source(tmp_path, monkeypatch, no_download):
    tree = make_tree(tmp_path / "tree")
    monkeypatch.setenv("QNETS_CIFAR10", str(tree))
    data = load_cifar10(tmp_path / "root")
    assert_data(data, expected_tree())
    assert data.source == f"image-folder tree {tree}"
    assert not no_download


def test_a_named_source_wins_over_a_cache_made_from_anything_else(tmp_path):
    tree = make_tree(tmp_path / "tree")
    root = tmp_path / "root"
    root.mkdir()
    (root / D.CACHE_NAME).write_bytes(os.urandom(1000))
    with pytest.raises(DataError, match=r"(?s)cache .*cifar10-uint8.pt: corrupt.*QNETS_CIFAR10"):
        load_cifar10(root, download=False)
    data = load_cifar10(root, source=tree, download=False)  # falls through, then overwrites
    assert_data(data, expected_tree())
    assert_cached(root, expected_tree(), data.source)
    assert data.cache == root / D.CACHE_NAME
    with from_cache_only():  # the cache made from this very source serves it
        assert load_cifar10(root, source=tree, download=False).source == data.source
    # a cache made from something else (a 20-image synthetic set) serves calls that name no
    # source, but never one that names a source
    D._write_cache(root / D.CACHE_NAME, synthetic_cifar10(20, 10), origin=None)
    assert load_cifar10(root, download=False).source == "synthetic(seed=0)"
    again = load_cifar10(root, source=tree, download=False)
    assert_data(again, expected_tree())
    assert load_cifar10(root, download=False).source == again.source  # and it is cached again


def test_qnets_data_says_cached_only_when_the_cache_was_written(tmp_path, monkeypatch, capsys):
    from qnets.__main__ import main
    tree = make_tree(tmp_path / "tree")
    assert main(["data", "--root", str(tmp_path / "root"), "--source", str(tree)]) == 0
    assert f"cached in {tmp_path / 'root' / D.CACHE_NAME}" in capsys.readouterr().out

    def refuse(obj, path):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(D, "atomic_save", refuse)
    with pytest.warns(UserWarning, match="could not write the CIFAR-10 cache"):
        assert main(["data", "--root", str(tmp_path / "other"), "--source", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "not cached" in out and "cached in" not in out


def test_download_fallback(tmp_path, monkeypatch):
    import torchvision.datasets
    blobs, expected = fake_batches(seed=3)

    def fake_download(root, train=True, download=False, **kw):
        assert download
        write_batches(Path(root) / "cifar-10-batches-py", blobs)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_download)
    data = load_cifar10(tmp_path / "root")
    assert_data(data, expected)
    assert "downloaded by torchvision" in data.source


def test_download_failure_is_reported(tmp_path, no_download):
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_cifar10(root)
    msg = str(err.value)
    assert no_download == [str(root)]
    lines = [f"cache {root / D.CACHE_NAME}: not found", "cifar-10-batches-py: not found",
             "source: none given", "download: failed (RuntimeError: offline: no route to host)",
             "(1)", "(2)", "(3)", "QNETS_CIFAR10", "train/<class>/"]
    for line in lines:
        assert line in msg
    assert msg.index("cache") < msg.index("source:") < msg.index("download:")
    with pytest.raises(DataError, match="download: not attempted \\(download=False\\)"):
        load_cifar10(root, download=False)
    assert_clean(root)


# ---------------------------------------------------------------------------------------------
# Bad inputs: a clear message, the way out, no cache left behind, no silent download

def corrupt_xz(tmp_path):
    p = tmp_path / "broken.tar.xz"
    p.write_bytes(os.urandom(4096))
    return p, "not a readable archive"


def truncated_xz(tmp_path):
    full = make_tar(make_tree(tmp_path / "tree"), tmp_path / "full.tar.xz")
    p = tmp_path / "cut.tar.xz"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return p, "not a readable archive"


def missing(tmp_path):
    return tmp_path / "nowhere" / "cifar.tar.xz", "does not exist"


def wrong_size(tmp_path):
    tree = make_tree(tmp_path / "tree")
    Image.new("RGB", (40, 30)).save(tree / "train" / "horse" / "0001.png")
    return tree, "train/horse/0001.png: image is 40x30, expected 32x32"


def missing_class(tmp_path):
    tree = make_tree(tmp_path / "tree")
    for p in (tree / "test" / "dog").iterdir():
        p.unlink()
    (tree / "test" / "dog").rmdir()
    return tree, "test/: no images for class(es) dog"


def unequal_counts(tmp_path):
    tree = make_tree(tmp_path / "tree")
    Image.fromarray(pixels("train", 6, 9)).save(tree / "train" / "frog" / "0009.png")
    return tree, "'frog': 4"


def unreadable(tmp_path):
    tree = make_tree(tmp_path / "tree")
    (tree / "train" / "bird" / "0002.png").write_bytes(b"this is not a png")
    return tree, "train/bird/0002.png: not an image Pillow can read"


def unreadable_in_archive(tmp_path):
    tree, _ = unreadable(tmp_path)
    return make_tar(tree, tmp_path / "bad.tar.gz", prefix="top/"), "bad.tar.gz:top/train/bird/0002.png: not an image"


def bad_batch_shape(tmp_path):
    blobs, _ = fake_batches()
    blobs["data_batch_3"] = fake_batches(n=4, rows=3000)[0]["data_batch_3"]
    return write_official_tgz(tmp_path / "cifar-10-python.tar.gz", blobs), "data_batch_3: data is uint8 of shape (4, 3000)"


def missing_batch(tmp_path):
    blobs, _ = fake_batches()
    del blobs["test_batch"]
    return write_batches(tmp_path / "cifar-10-batches-py", blobs), "missing: test_batch"


def no_tree(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    return tmp_path / "empty", "found neither an image-folder tree"


@pytest.mark.parametrize("case", [corrupt_xz, truncated_xz, missing, wrong_size, missing_class,
                                  unequal_counts, unreadable, unreadable_in_archive, bad_batch_shape,
                                  missing_batch, no_tree])
def test_bad_source(tmp_path, case, no_download):
    src, problem = case(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_cifar10(root, source=src)  # download=True, yet a failing source must not fall back
    msg = str(err.value)
    assert problem in msg
    assert f"source {src}:" in msg
    assert "download: not attempted because a source was given" in msg
    assert "QNETS_CIFAR10" in msg and "(3)" in msg
    assert not no_download
    assert_clean(root)


def test_bad_official_batches_in_root_fall_through(tmp_path, no_download):
    blobs, _ = fake_batches()
    blobs["data_batch_1"] = b"garbage"
    root = tmp_path / "root"
    write_batches(root / "cifar-10-batches-py", blobs)
    tree = make_tree(tmp_path / "tree")
    data = load_cifar10(root, source=tree)
    assert_data(data, expected_tree())
    (root / D.CACHE_NAME).unlink()
    with pytest.raises(DataError, match="data_batch_1: not a readable CIFAR-10 batch pickle"):
        load_cifar10(root)


def test_batch_pickle_cannot_run_code(tmp_path):
    blobs, _ = fake_batches()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    blobs["data_batch_2"] = pickle.dumps({b"data": Evil(), b"labels": []})
    with pytest.raises(DataError, match="data_batch_2: not a readable .*unexpected object"):
        load_cifar10(tmp_path / "root", source=write_batches(tmp_path / "b", blobs))


def test_interrupted_cache_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(D.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(tmp_path / "root", source=make_tree(tmp_path / "tree"))
    assert list((tmp_path / "root").glob("**/*")) == []


# ---------------------------------------------------------------------------------------------
# The real data, where a copy is available

@pytest.mark.skipif(not (REAL_ENV or OFFLINE_COPY.is_file()),
                    reason=f"no CIFAR-10 copy: set QNETS_CIFAR10 or provide {OFFLINE_COPY}")
def test_real_cifar10():
    data = load_cifar10(REPO / "data", source=REAL_ENV or OFFLINE_COPY, download=False)
    for split, n in ((data.train, 5000), (data.test, 1000)):
        assert split.images.shape == (10 * n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert torch.equal(torch.bincount(split.labels, minlength=10), torch.full((10,), n))
    mean = data.train.images[::10].float().mean((0, 2, 3)) / 255  # every class, a tenth of it
    assert torch.allclose(mean, torch.tensor(MEAN_STD["cifar10"][0]), atol=0.02)


# ---------------------------------------------------------------------------------------------
# Synthetic data, subsets

def test_synthetic():
    a, b = synthetic_cifar10(200, 50, seed=0), synthetic_cifar10(200, 50, seed=0)
    assert a.source == "synthetic(seed=0)"
    for sa, sb, n in ((a.train, b.train, 200), (a.test, b.test, 50)):
        assert sa.images.shape == (n, 3, 32, 32) and sa.images.dtype == torch.uint8
        assert sa.labels.dtype == torch.int64
        assert torch.equal(sa.images, sb.images) and torch.equal(sa.labels, sb.labels)
        assert torch.equal(torch.bincount(sa.labels), torch.full((10,), n // 10))
    assert sa.images.float().std() > 20  # not blank
    c = synthetic_cifar10(200, 50, seed=1)
    assert not torch.equal(a.train.images, c.train.images)
    assert torch.equal(synthetic_cifar10(200, 10, seed=0).train.images, a.train.images)


def test_synthetic_has_class_signal():
    d = synthetic_cifar10(1000, 200)
    means = torch.stack([d.train.images[d.train.labels == c].float().mean(0) for c in range(10)])
    dist = ((d.test.images.float()[:, None] - means[None]) ** 2).sum((2, 3, 4))
    assert (dist.argmin(1) == d.test.labels).float().mean() > 0.5


def id_split(n, side=32, seed=0):
    """Random images whose label is their index (an id that survives shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8), torch.arange(n))


def test_subset():
    s = synthetic_cifar10(1000, 10).train
    for n, counts in ((100, [10] * 10), (105, [11] * 5 + [10] * 5)):
        sub = subset(s, n, seed=4)
        assert len(sub) == n and torch.equal(torch.bincount(sub.labels), torch.tensor(counts))
    sub = subset(s, 50, seed=1)
    where = {im.numpy().tobytes(): i for i, im in enumerate(s.images)}
    pos = torch.tensor([where[im.numpy().tobytes()] for im in sub.images])
    assert torch.equal(pos, pos.sort().values)  # original order kept
    assert torch.equal(subset(s, 50, seed=1).images, sub.images)
    assert not torch.equal(subset(s, 50, seed=2).images, sub.images)
    assert torch.equal(subset(s, 1000).images, s.images)
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError, match=f"n={bad}"):
            subset(s, bad)
    d = take(synthetic_cifar10(100, 50), n_train=20)
    assert (len(d.train), len(d.test)) == (20, 50) and "subset" in d.source


# ---------------------------------------------------------------------------------------------
# DeviceLoader

def denormalise(x, stats="cifar10"):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in MEAN_STD[stats])
    return (x.float() * std + mean) * 255


@pytest.mark.parametrize("stats", ["cifar10", "imagenet"])
def test_loader_test_mode(stats):
    s = id_split(45)
    loader = DeviceLoader(s, 10, train=False, normalize=stats)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and [len(y) for _, y in batches] == [10] * 4 + [5]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (45, 3, 32, 32)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(45))
    assert (denormalise(x, stats) - s.images.float()).abs().max() < 1e-3
    assert torch.equal(torch.cat([b[0] for b in loader.epoch(7)]), x)


def test_loader_train_reproducible_by_seed_and_epoch():
    s = id_split(50)
    run = lambda seed, e, **kw: list(DeviceLoader(s, 16, train=True, seed=seed, **kw).epoch(e))
    a, b = run(0, 3), run(0, 3)  # a fresh loader replays any epoch: exact resume
    assert len(a) == 3 and all(len(y) == 16 for _, y in a)  # drop_last by default when training
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][1], run(0, 4)[0][1])
    assert not torch.equal(a[0][1], run(1, 3)[0][1])
    full = run(0, 3, drop_last=False)
    ids = torch.cat([y for _, y in full])
    assert torch.equal(ids.sort().values, torch.arange(50))  # each sample exactly once
    assert not torch.equal(ids, torch.arange(50))


def test_loader_augmentation_is_a_padded_crop_maybe_flipped():
    s = id_split(12)
    x, y = next(DeviceLoader(s, 12, train=True).epoch(0))
    got = denormalise(x).round().to(torch.uint8)
    padded = torch.nn.functional.pad(s.images, (4, 4, 4, 4))
    for img, i in zip(got, y):
        crops = [c.flip(-1) if f else c for oy in range(9) for ox in range(9) for f in (0, 1)
                 for c in [padded[i, :, oy:oy + 32, ox:ox + 32]]]
        assert sum(torch.equal(img, c) for c in crops) == 1


def test_loader_offsets_uniform_and_half_flipped():
    n = 3000
    code = torch.arange(1, 33, dtype=torch.uint8)  # channel 0: column + 1, channel 1: row + 1
    img = torch.stack([code.view(1, 32).expand(32, 32), code.view(32, 1).expand(32, 32),
                       torch.zeros(32, 32, dtype=torch.uint8)])
    s = Split(img.expand(n, 3, 32, 32).clone(), torch.zeros(n, dtype=torch.int64))
    x = torch.cat([b for b, _ in DeviceLoader(s, 500, train=True, normalize=None).epoch(0)])
    u = (x * 255).round().long()
    cols, rows = u[:, 0, 16], u[:, 1, :, 16]  # crop row/column 16 always lies inside the image

    def offset(v):  # the visible codes are min..max of the non-zero ones
        lo = torch.where(v > 0, v, 99).min(1).values
        return 4 + (lo - 1) - (32 - v.max(1).values)
    for off in (offset(cols), offset(rows)):
        counts = torch.bincount(off, minlength=9)
        assert len(counts) == 9 and counts.min() > n / 9 * 0.7 and counts.max() < n / 9 * 1.3
    flipped = cols[:, 12] > cols[:, 20]  # both inside the image; codes decrease when mirrored
    assert 0.45 < flipped.float().mean() < 0.55
    assert torch.equal(rows[:, 12] < rows[:, 20], torch.ones(n, dtype=torch.bool))  # never flipped vertically


def test_loader_options():
    s = id_split(20)
    plain = next(DeviceLoader(s, 8, train=False).epoch(0))[0]
    cl = next(DeviceLoader(s, 8, train=False, channels_last=True).epoch(0))[0]
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, plain)
    half = next(DeviceLoader(s, 8, train=False, dtype=torch.bfloat16, channels_last=True).epoch(0))[0]
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)
    raw = next(DeviceLoader(s, 8, train=False, normalize=None).epoch(0))[0]
    assert torch.equal((raw * 255).round().to(torch.uint8), s.images[:8])
    assert len(DeviceLoader(s, 8, train=True)) == 2 and len(DeviceLoader(s, 8, train=False)) == 3
    with pytest.raises(ValueError, match="cifar10"):
        DeviceLoader(s, 8, train=False, normalize="mnist")
    with pytest.raises(ValueError, match="no batches"):
        DeviceLoader(s, 32, train=True)
    assert DeviceLoader(s, 8, train=False).images.device == s.images.device
