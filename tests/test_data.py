"""Datasets (digits, npz, CIFAR layout errors) and the seeded on-device loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ardbench.data import (
    DATASETS,
    Dataset,
    DeviceLoader,
    MissingArrayError,
    augment_batch,
    dataset_descriptions,
    default_data_dir,
    fingerprint_arrays,
    load_dataset,
)
from ardbench.methods.base import Batch
from ardbench.registry import UnknownNameError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_DIR = SHARED_DATA / "cifar10"


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


# --------------------------------------------------------------------------- digits


def test_digits_shapes_counts_labels(digits: Dataset) -> None:
    assert digits.spec == "digits"
    assert digits.has_train
    assert digits.num_classes == 10
    assert digits.x_train.shape == (1438, 3, 32, 32)
    assert digits.x_test.shape == (359, 3, 32, 32)
    assert digits.num_train + digits.num_test == 1797
    for x, y in ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test)):
        assert x.dtype == torch.uint8 and x.is_contiguous()
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert set(y.tolist()) == set(range(10))
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert int(digits.x_train.max()) == 255 and int(digits.x_train.min()) == 0
    # stratified: every class has round(20%) of its images in the test split
    counts = np.bincount(np.r_[digits.y_train.numpy(), digits.y_test.numpy()])
    test_counts = np.bincount(digits.y_test.numpy())
    assert (test_counts == np.rint(0.2 * counts)).all()


def _bilinear_matrix(n_out: int = 32, n_in: int = 8) -> np.ndarray:
    """Bilinear resampling (align_corners=False, edge-clamped) as an (n_out, n_in) matrix."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n_in - 1)
        m[o, i0] += 1 - (src - i0)
        m[o, i1] += src - i0
    return m


def test_digits_is_the_sklearn_data_upsampled(digits: Dataset) -> None:
    """Every image is one sklearn digit, scaled to 0..255 and bilinearly upsampled (computed
    here independently of F.interpolate), with its own label; each digit is used once."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    m = _bilinear_matrix()
    small = np.rint(raw.images * 255 / 16)  # N,8,8
    ref = np.rint(m @ small @ m.T).astype(np.uint8)  # N,32,32
    lookup = {img.tobytes(): i for i, img in enumerate(ref)}
    assert len(lookup) == len(ref)  # no duplicate images in the source
    used = []
    for x, y in ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test)):
        for img, label in zip(x[:, 0].numpy(), y.tolist(), strict=True):
            i = lookup[np.ascontiguousarray(img).tobytes()]
            assert raw.target[i] == label
            used.append(i)
    assert sorted(used) == list(range(1797))
    # both splits keep the original order
    assert used[:1438] == sorted(used[:1438]) and used[1438:] == sorted(used[1438:])


def test_digits_deterministic_and_fingerprint_stable(digits: Dataset) -> None:
    again = load_dataset("digits")
    assert torch.equal(again.x_train, digits.x_train)
    assert torch.equal(again.y_test, digits.y_test)
    assert again.fingerprint == digits.fingerprint
    assert len(digits.fingerprint) == 64 and int(digits.fingerprint, 16) >= 0
    assert digits.fingerprint == fingerprint_arrays(
        digits.x_train, digits.y_train, digits.x_test, digits.y_test
    )


def test_test_fingerprint_is_the_fingerprint_of_a_test_only_copy(digits: Dataset) -> None:
    test_only = Dataset.from_arrays("copy", x_test=digits.x_test, y_test=digits.y_test)
    assert test_only.fingerprint == test_only.test_fingerprint == digits.test_fingerprint
    assert digits.test_fingerprint != digits.fingerprint  # the training arrays count there


def test_fingerprint_changes_with_data(digits: Dataset) -> None:
    fp = digits.fingerprint
    x = digits.x_test.clone()
    x[0, 0, 0, 0] ^= 1
    assert fingerprint_arrays(digits.x_train, digits.y_train, x, digits.y_test) != fp
    y = digits.y_test.clone()
    y[0] = (y[0] + 1) % 10
    assert fingerprint_arrays(digits.x_train, digits.y_train, digits.x_test, y) != fp
    # dropping the train part, swapping parts, or changing dtype/shape also changes it
    assert fingerprint_arrays(None, None, digits.x_test, digits.y_test) != fp
    assert fingerprint_arrays(digits.x_test, digits.y_test, digits.x_train, digits.y_train) != fp
    xf = digits.x_test.float() / 255
    assert fingerprint_arrays(None, None, xf, digits.y_test) != fingerprint_arrays(
        None, None, digits.x_test, digits.y_test
    )
    flat = digits.x_test.reshape(len(digits.x_test), 3, 16, 64)
    assert fingerprint_arrays(None, None, flat, digits.y_test) != fingerprint_arrays(
        None, None, digits.x_test, digits.y_test
    )


def test_test_subset_first_n_in_order(digits: Dataset) -> None:
    x, y = digits.test_subset(17, "cpu")
    assert x.shape == (17, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64
    assert torch.equal(y, digits.y_test[:17])
    assert torch.equal(x, digits.x_test[:17].float() / 255)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    xa, ya = digits.test_subset(None, torch.device("cpu"))
    assert len(xa) == digits.num_test and torch.equal(ya, digits.y_test)
    with pytest.raises(ValueError, match="359 test points"):
        digits.test_subset(360)
    with pytest.raises(ValueError):
        digits.test_subset(0)


# --------------------------------------------------------------------------- registry


def test_registry_lists_named_datasets() -> None:
    assert {"digits", "cifar10", "cifar100"} <= set(DATASETS.names())
    desc = dataset_descriptions()
    assert "npz:PATH" in desc
    assert all(isinstance(v, str) and v and "\n" not in v for v in desc.values())
    with pytest.raises(UnknownNameError, match="(?i:did you mean) 'cifar10'.*npz:PATH"):
        load_dataset("cifar-10")


def test_default_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARDBENCH_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("ARDBENCH_DATA_DIR")
    monkeypatch.setenv("ARDBENCH_CACHE", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "data"  # the cache moves the data too
    monkeypatch.delenv("ARDBENCH_CACHE")
    assert default_data_dir() == Path.home() / ".cache" / "ardbench" / "data"


# --------------------------------------------------------------------------- npz


def _rand_uint8_nhwc(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(n, 32, 32, 3)).astype(np.uint8)


def test_npz_uint8_nhwc_round_trip(tmp_path: Path) -> None:
    xtr, xte = _rand_uint8_nhwc(12, 0), _rand_uint8_nhwc(5, 1)
    ytr = np.arange(12) % 10
    yte = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, idx_test=np.arange(5))
    ds = load_dataset(f"npz:{path}")
    assert ds.spec == f"npz:{path}" and ds.has_train and ds.num_classes == 10
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (12, 3, 32, 32)
    assert ds.x_train.is_contiguous() and ds.x_test.is_contiguous()
    assert np.array_equal(ds.x_train.permute(0, 2, 3, 1).numpy(), xtr)
    assert np.array_equal(ds.x_test.permute(0, 2, 3, 1).numpy(), xte)
    assert ds.y_test.dtype == torch.int64 and ds.y_test.tolist() == yte.tolist()
    assert str(path) in ds.description
    # same arrays, same fingerprint; the extra idx_test array does not count
    path2 = tmp_path / "e.npz"
    np.savez(path2, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte.astype(np.int64))
    assert load_dataset(f"npz:{path2}").fingerprint == ds.fingerprint
    x, _ = ds.test_subset(2)
    assert torch.equal(x, torch.from_numpy(xte[:2]).permute(0, 3, 1, 2).float() / 255)


def test_npz_float_nchw_and_nhwc(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    x = rng.rand(6, 3, 8, 8).astype(np.float64)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "f.npz", x_test=x, y_test=y)
    ds = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert not ds.has_train and ds.x_train is None and ds.y_train is None
    assert ds.x_test.dtype == torch.float32 and ds.x_test.shape == (6, 3, 8, 8)
    assert torch.allclose(ds.x_test, torch.from_numpy(x).float())
    assert ds.num_classes == 10  # labels <= 9 -> 10 classes
    xt, _ = ds.test_subset(3)
    assert torch.equal(xt, ds.x_test[:3])
    xt.zero_()  # a copy: the dataset is untouched
    assert torch.allclose(ds.x_test, torch.from_numpy(x).float())
    np.savez(tmp_path / "g.npz", x_test=x.transpose(0, 2, 3, 1).astype(np.float32), y_test=y)
    ds2 = load_dataset(f"npz:{tmp_path / 'g.npz'}")
    assert torch.equal(ds2.x_test, ds.x_test) and ds2.fingerprint == ds.fingerprint
    with pytest.raises(ValueError, match="has no training split"):
        ds.train_loader(batch_size=2, seed=0, augment=False)


def test_npz_float_out_of_range_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x_test=np.full((2, 3, 4, 4), 2.0), y_test=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        load_dataset(f"npz:{tmp_path / 'f.npz'}")
    np.savez(tmp_path / "i.npz", x_test=np.zeros((2, 4, 4, 3), np.int64), y_test=[0, 1])
    with pytest.raises(ValueError, match="uint8"):
        load_dataset(f"npz:{tmp_path / 'i.npz'}")


def test_npz_num_classes(tmp_path: Path) -> None:
    x = _rand_uint8_nhwc(3, 0)
    np.savez(tmp_path / "a.npz", x_test=x, y_test=np.array([0, 42, 3]))
    assert load_dataset(f"npz:{tmp_path / 'a.npz'}").num_classes == 43
    np.savez(tmp_path / "b.npz", x_test=x, y_test=np.array([0, 1, 3]), num_classes=100)
    assert load_dataset(f"npz:{tmp_path / 'b.npz'}").num_classes == 100
    np.savez(tmp_path / "c.npz", x_test=x, y_test=np.array([0, 1, 3]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")


def test_npz_missing_arrays_named(tmp_path: Path) -> None:
    x = _rand_uint8_nhwc(3, 0)
    y = np.array([0, 1, 2])
    p = tmp_path / "no_y.npz"
    np.savez(p, x_test=x)
    with pytest.raises(MissingArrayError, match=rf"{p}.*'y_test'"):
        load_dataset(f"npz:{p}")
    p = tmp_path / "train_only.npz"
    np.savez(p, x_train=x, y_train=y)
    with pytest.raises(MissingArrayError, match=r"'x_test'.*training data only.*\+TEST\.npz"):
        load_dataset(f"npz:{p}")
    p = tmp_path / "half_train.npz"
    np.savez(p, x_train=x, x_test=x, y_test=y)
    with pytest.raises(MissingArrayError, match=rf"{p}.*'y_train'"):
        load_dataset(f"npz:{p}")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset(f"npz:{tmp_path / 'nowhere.npz'}")
    p = tmp_path / "bad_len.npz"
    np.savez(p, x_test=x, y_test=np.array([0, 1]))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        load_dataset(f"npz:{p}")


def test_npz_plus_combination(tmp_path: Path) -> None:
    xtr, xte = _rand_uint8_nhwc(7, 0), _rand_uint8_nhwc(4, 1)
    ytr, yte = np.arange(7) % 10, np.arange(4)
    train, test = tmp_path / "tr+ain.npz", tmp_path / "test.npz"  # '+' inside a name is fine
    np.savez(train, x_train=xtr, y_train=ytr, idx_train=np.arange(7))
    np.savez(test, x_test=xte, y_test=yte, idx_test=np.arange(4))
    ds = load_dataset(f"npz:{train}+{test}")
    assert ds.num_train == 7 and ds.num_test == 4 and ds.has_train
    np.savez(tmp_path / "all.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    assert load_dataset(f"npz:{tmp_path / 'all.npz'}").fingerprint == ds.fingerprint
    # a name present in both files is an error that names it and both files
    with pytest.raises(ValueError, match=r"'x_test'.*test\.npz.*all\.npz"):
        load_dataset(f"npz:{test}+{tmp_path / 'all.npz'}")


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize(
    "name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_cifar_missing_files_message(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path)
    msg = str(info.value)
    assert f"{tmp_path / folder}/" in msg
    assert "--download" in msg
    assert list(tmp_path.iterdir()) == []  # nothing created, no network


def test_cifar_default_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARDBENCH_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="cache/cifar-10-batches-py/"):
        load_dataset("cifar10")


def test_cifar10_fake_files_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The torchvision layout is converted to uint8 NCHW (md5 check patched out)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(3, 3072)).astype(np.uint8)  # CHW-flattened rows
        labels = rng.randint(0, 10, size=3).tolist()
        rows[name] = (data, labels)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.num_train == 15 and ds.num_test == 3 and ds.num_classes == 10
    assert ds.x_test.dtype == torch.uint8 and ds.x_test.shape == (3, 3, 32, 32)
    data, labels = rows["test_batch"]
    assert np.array_equal(ds.x_test.numpy(), data.reshape(3, 3, 32, 32))
    assert ds.y_test.tolist() == labels
    assert np.array_equal(ds.x_train[3:6].numpy(), rows["data_batch_2"][0].reshape(3, 3, 32, 32))


# --------------------------------------------------------------------------- loader


def _loader(x, y, **kw) -> DeviceLoader:
    kw = {"batch_size": 16, "seed": 3, "augment": True, "device": "cpu", **kw}
    return DeviceLoader(x, y, **kw)


def _collect(loader: DeviceLoader, epoch: int) -> list[Batch]:
    return list(loader.epoch_batches(epoch))


def test_loader_deterministic_per_seed_and_epoch(digits: Dataset) -> None:
    x, y = digits.x_train[:300], digits.y_train[:300]
    a = _collect(_loader(x, y), 5)
    b = _collect(_loader(x, y), 5)  # fresh loader: resume at epoch 5
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y) and torch.equal(p.index, q.index)
    c = _collect(_loader(x, y), 6)
    assert not torch.equal(a[0].index, c[0].index)
    d = _collect(_loader(x, y, seed=4), 5)
    assert not torch.equal(a[0].index, d[0].index)
    # augmentation does not change the order
    e = _collect(_loader(x, y, augment=False), 5)
    assert torch.equal(torch.cat([p.index for p in a]), torch.cat([p.index for p in e]))


def test_loader_covers_every_index_once(digits: Dataset) -> None:
    loader = _loader(digits.x_train, digits.y_train, batch_size=100)
    assert len(loader) == 15  # ceil(1438 / 100)
    batches = _collect(loader, 0)
    assert len(batches) == 15 and len(batches[-1].y) == 38
    idx = torch.cat([b.index for b in batches])
    assert torch.equal(idx.sort().values, torch.arange(1438))
    for b in batches:
        assert torch.equal(b.y, digits.y_train[b.index])
    dropped = _loader(digits.x_train, digits.y_train, batch_size=100, drop_last=True)
    assert len(dropped) == 14 and len(_collect(dropped, 0)) == 14
    ordered = _loader(digits.x_train, digits.y_train, batch_size=500, shuffle=False, augment=False)
    batches = _collect(ordered, 0)
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(1438))
    assert torch.equal(batches[0].x, digits.x_train[:500].float() / 255)


def test_loader_batch_types(digits: Dataset) -> None:
    for x in (digits.x_train[:40], digits.x_train[:40].float() / 255):
        for augment in (False, True):
            for b in _collect(_loader(x, digits.y_train[:40], augment=augment), 1):
                assert isinstance(b, Batch)
                assert b.x.dtype == torch.float32 and b.x.is_contiguous()
                assert b.x.shape[1:] == (3, 32, 32)
                assert 0.0 <= float(b.x.min()) and float(b.x.max()) <= 1.0
                assert b.y.dtype == torch.int64 and b.index.dtype == torch.int64
                assert b.x.device.type == b.y.device.type == b.index.device.type == "cpu"


def _identifiable(h: int = 32, w: int = 32) -> torch.Tensor:
    """One float64 image whose every pixel value (> 0) encodes (channel, row, col)."""
    c = torch.arange(3, dtype=torch.float64)[:, None, None]
    r = torch.arange(h, dtype=torch.float64)[None, :, None]
    q = torch.arange(w, dtype=torch.float64)[None, None, :]
    return 1 + q + 100 * r + 10_000 * c


def _decode_shift(img: torch.Tensor) -> tuple[int, int, bool]:
    """(dy, dx, flipped) of an augmented copy of ``_identifiable()``; asserts it is exactly a
    shifted (and possibly mirrored) copy with zero fill outside the source."""
    ref = _identifiable()
    nz = img[0] != 0
    rr, cc = nz.nonzero(as_tuple=True)  # row-major: the first two are in one row
    src = img[0, rr, cc].long() - 1
    src_r, src_c = src // 100, src % 100
    dy = int(src_r[0] - rr[0])
    assert torch.all(src_r - rr == dy)  # one vertical shift
    flipped = bool(src_c[1] < src_c[0])
    if flipped:
        dx = int(src_c[0] + cc[0]) - 31
        assert torch.all(src_c + cc == 31 + dx)  # a mirror
    else:
        dx = int(src_c[0] - cc[0])
        assert torch.all(src_c - cc == dx)
    assert abs(dy) <= 4 and abs(dx) <= 4
    # zero exactly where the shifted source falls outside the image, all channels agree
    assert int(nz.sum()) == (32 - abs(dy)) * (32 - abs(dx))
    assert torch.equal(img[:, nz], ref[:, src_r, src_c])
    assert torch.all(img[:, ~nz] == 0)
    return dy, dx, flipped


def test_augment_batch_is_shifted_copy_and_mirror() -> None:
    n = 162
    x = _identifiable().expand(n, -1, -1, -1).contiguous()
    grid = torch.stack(torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij"), -1)
    offsets = grid.reshape(-1, 2).repeat(2, 1)  # every (top, left) offset, unflipped and flipped
    flips = torch.arange(n) >= 81
    out = augment_batch(x, offsets, flips)
    assert out.shape == x.shape and out.is_contiguous() and out.dtype == x.dtype
    for k in range(n):
        dy, dx, flipped = _decode_shift(out[k])
        assert (dy + 4, dx + 4) == tuple(offsets[k].tolist()) and flipped == bool(flips[k])
    # uint8 images are augmented the same way
    xu = (torch.arange(3 * 32 * 32) % 251).reshape(1, 3, 32, 32).to(torch.uint8).repeat(n, 1, 1, 1)
    outu = augment_batch(xu, offsets, flips)
    assert outu.dtype == torch.uint8
    assert torch.equal(outu.float() / 255, augment_batch(xu.float() / 255, offsets, flips))


def test_loader_augmentation_is_crop_and_flip() -> None:
    n = 256
    x = (_identifiable() / 32768).to(torch.float32).expand(n, -1, -1, -1)  # exact in float32
    loader = DeviceLoader(
        x, torch.zeros(n, dtype=torch.long), batch_size=64, seed=0, augment=True, device="cpu"
    )
    order, offsets, flips = loader.epoch_order(0)
    pos = 0
    for b in loader.epoch_batches(0):
        assert torch.equal(b.index, order[pos : pos + len(b.index)])
        imgs = (b.x.double() * 32768).round()
        for k in range(len(imgs)):
            dy, dx, flipped = _decode_shift(imgs[k])
            assert (dy + 4, dx + 4) == tuple(offsets[pos].tolist())
            assert flipped == bool(flips[pos])
            pos += 1
    assert pos == n
    # the draws: offsets uniform over 0..8 in each axis (RandomCrop(32, padding=4)), p(flip)=0.5
    big = DeviceLoader(
        torch.zeros(8000, 3, 2, 2),
        torch.zeros(8000, dtype=torch.long),
        batch_size=8000,
        seed=1,
        augment=True,
    )
    _, offsets, flips = big.epoch_order(0)
    assert offsets.min() == 0 and offsets.max() == 8
    assert len({tuple(o) for o in offsets.tolist()}) == 81
    counts = torch.bincount(offsets.flatten(), minlength=9).double() / offsets.numel()
    assert torch.all((counts - 1 / 9).abs() < 0.02)
    assert abs(flips.double().mean().item() - 0.5) < 0.03


def test_loader_uint8_and_float_sources_agree(digits: Dataset) -> None:
    xu, y = digits.x_train[:100], digits.y_train[:100]
    a = _collect(_loader(xu, y), 2)
    b = _collect(_loader(xu.float() / 255, y), 2)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p.x, q.x) and torch.equal(p.index, q.index)


def test_loader_builds_the_epoch_once_and_a_batch_costs_one_conversion(digits: Dataset) -> None:
    """Issue 14: nothing is drawn, indexed or allocated per step but the batch's float copy.
    The epoch's images, labels and indices are built once; batches are views of them."""
    from torch.profiler import ProfilerActivity, profile

    from ardbench.data import to_float01

    loader = _loader(digits.x_train[:200], digits.y_train[:200], batch_size=64)
    xe, ye, order = loader.epoch_data(4)
    assert xe.dtype == torch.uint8 and len(xe) == len(ye) == len(order) == 200
    it = loader.epoch_batches(4)
    batches = [next(it)]  # builds the epoch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        batches.append(next(it))
    ops = [e.name for e in prof.events() if e.name.startswith("aten::")]
    per_step = {"gather", "index", "index_select", "arange", "pad", "randperm", "rand", "cat"}
    assert not {f"aten::{op}" for op in per_step} & set(ops), ops
    assert ops.count("aten::div") == 1  # the float conversion (the scalar's own `to` aside)
    batches += list(it)
    assert [len(b.y) for b in batches] == [64, 64, 64, 8]
    for i, b in enumerate(batches):
        sl = slice(64 * i, 64 * (i + 1))
        assert torch.equal(b.x, to_float01(xe[sl])) and torch.equal(b.index, order[sl])
        assert torch.equal(b.y, ye[sl])
        # views of the epoch's tensors, not per-batch copies
        for t, first in ((b.index, batches[0].index), (b.y, batches[0].y)):
            assert t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
    dropped = _loader(digits.x_train[:200], digits.y_train[:200], batch_size=64, drop_last=True)
    assert len(dropped.epoch_data(4)[2]) == 192
    assert torch.equal(dropped.epoch_data(4)[2], order[:192])


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.skipif(not CIFAR_DIR.is_dir(), reason="../shared/data is not beside the checkout")
def test_real_exact_cifar10_npz() -> None:
    train, test = CIFAR_DIR / "cifar10_exact_train_subset.npz", CIFAR_DIR / "cifar10_exact_test.npz"
    ds = load_dataset(f"npz:{train}+{test}")
    assert ds.num_train == 8068 and ds.num_test == 1017 and ds.num_classes == 10
    assert ds.x_train.shape == (8068, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (1017, 3, 32, 32)
    raw = np.load(test)
    assert np.array_equal(ds.x_test.permute(0, 2, 3, 1).numpy(), raw["x_test"])
    assert ds.y_test.tolist() == raw["y_test"].tolist()
    eval_only = load_dataset(f"npz:{test}")
    assert not eval_only.has_train and eval_only.num_test == 1017
    assert torch.equal(eval_only.x_test, ds.x_test)
    assert eval_only.fingerprint != ds.fingerprint
    with pytest.raises(MissingArrayError, match="x_test"):
        load_dataset(f"npz:{train}")
    x, y = ds.test_subset(10)
    assert x.shape == (10, 3, 32, 32) and torch.equal(y, ds.y_test[:10])
