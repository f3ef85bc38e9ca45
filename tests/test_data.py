"""CIFAR-10 loading (every source format, auto mode, bad inputs) and the tutorial's batches.

Hermetic: every dataset here is generated in tmp_path or mocked with `tfds.testing.mock_data`;
nothing is downloaded and the machine's real data folders are never searched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jaxopt_lab.cifar import data
from jaxopt_lab.cifar.data import Dataset, batches, load_cifar10, num_batches, synthetic_cifar10

# --------------------------------------------------------------------------- tiny CIFAR-10s

SPLIT_SIZES = {"test": 7, "train": 11}


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic tiny stand-in for a split: uint8 (n,32,32,3) images, int labels 0..9."""
    rng = np.random.default_rng(len(split))
    n = SPLIT_SIZES[split]
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _write_npz(root: Path, split: str) -> Path:
    images, labels = _split(split)
    np.savez(root / f"{split}.npz", image=images, label=labels)
    return root / f"{split}.npz"


def _pickled_batches(split: str) -> dict[str, bytes]:
    """The official python format: per batch a pickled dict, `data` uint8 (n, 3072) in CHW."""
    images, labels = _split(split)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    chunks = np.array_split(np.arange(len(labels)), len(names))
    return {
        name: pickle.dumps(
            {
                b"data": images[idx].transpose(0, 3, 1, 2).reshape(len(idx), 3072),
                b"labels": labels[idx].tolist(),
            }
        )
        for name, idx in zip(names, chunks, strict=True)
    }


def _write_batches_dir(root: Path, split: str) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for s in SPLIT_SIZES:  # both splits, so picking the right files is tested
        for name, blob in _pickled_batches(s).items():
            (folder / name).write_bytes(blob)
    return folder


def _write_archive(root: Path, split: str) -> Path:
    path = root / data.CIFAR10_ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        for s in SPLIT_SIZES:
            for name, blob in _pickled_batches(s).items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return path


_FEATURES = {
    "featuresDict": {
        "features": {
            "id": {
                "pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
                "text": {},
            },
            "image": {
                "image": {"dtype": "uint8", "shape": {"dimensions": ["32", "32", "3"]}},
                "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
            },
            "label": {
                "classLabel": {"numClasses": "10"},
                "pythonClassName": (
                    "tensorflow_datasets.core.features.class_label_feature.ClassLabel"
                ),
            },
        }
    },
    "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
}


def _write_tfds(root: Path, split: str) -> Path:
    """A prepared tfds `cifar10` (array_record, PNG-encoded tf.train.Examples), as `tfds build`
    writes it, with the records stored out of `id` order (tfds's write order is shuffled)."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from PIL import Image
    from tensorflow_datasets.proto import tf_example_pb2

    folder = root / "tfds" / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    splits = []
    for s in SPLIT_SIZES:
        images, labels = _split(s)
        path = folder / f"cifar10-{s}.array_record-00000-of-00001"
        writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
        for i in np.random.default_rng(1).permutation(len(labels)):
            png = io.BytesIO()
            Image.fromarray(images[i]).save(png, format="PNG")
            example = tf_example_pb2.Example()
            feature = example.features.feature
            feature["image"].bytes_list.value.append(png.getvalue())
            feature["label"].int64_list.value.append(int(labels[i]))
            feature["id"].bytes_list.value.append(f"{s}_{i:05d}".encode())
            writer.write(example.SerializeToString())
        writer.close()
        template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
        splits.append({"name": s, "filepathTemplate": template, "shardLengths": [str(len(labels))]})
    info = {"name": "cifar10", "version": "3.0.2", "fileFormat": "array_record", "splits": splits}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    (folder / "features.json").write_text(json.dumps(_FEATURES))
    return root / "tfds"


SOURCES = {
    "npz": _write_npz,
    "archive": _write_archive,
    "batches_dir": _write_batches_dir,
    "batches_parent_dir": lambda root, split: _write_batches_dir(root, split).parent,
    "tfds_data_dir": _write_tfds,
    "tfds_dataset_dir": lambda root, split: _write_tfds(root, split) / "cifar10",
    "tfds_version_dir": lambda root, split: _write_tfds(root, split) / "cifar10" / "3.0.2",
}


@pytest.mark.parametrize("split", SPLIT_SIZES)
@pytest.mark.parametrize("write", SOURCES.values(), ids=SOURCES.keys())
def test_load_every_source_format(tmp_path, write, split):
    """Each format round-trips the split's images and labels exactly, in the split's order."""
    ds = load_cifar10(write(tmp_path, split), split)
    images, labels = _split(split)
    assert not ds.synthetic and "CIFAR-10" in ds.name and f"{len(labels):,} images" in ds.name
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


@pytest.mark.parametrize("split", ["test", "train"])
def test_load_tfds_mock_data(tmp_path, split):
    """`tfds.testing.mock_data` serves decoded records: the one-at-a-time path."""
    import tensorflow_datasets as tfds

    stub = tmp_path / "cifar10" / "3.0.2"  # makes tmp_path look like a prepared data_dir
    stub.mkdir(parents=True)
    (stub / "dataset_info.json").write_text("{}")
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_cifar10(tmp_path, split)
    assert len(ds) == 5 and not ds.synthetic and f"CIFAR-10 {split}" in ds.name
    assert ds.images.shape == (5, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32 and set(ds.labels) <= set(range(10))


# --------------------------------------------------------------------------- auto mode


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """Auto mode with nothing local and no network; the cache in tmp_path."""
    monkeypatch.setattr(data, "_search_candidates", lambda: [tmp_path / "no_tfds"])
    monkeypatch.setattr(data, "_host_reachable", lambda *a, **k: False)
    monkeypatch.setenv("JAXOPT_LAB_DATA", os.fspath(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("split,n", [("test", 10_000), ("train", 50_000)])
def test_auto_falls_back_to_labelled_synthetic_fast(nowhere, capsys, split, n):
    start = time.perf_counter()
    ds = load_cifar10(None, split)
    assert time.perf_counter() - start < 20  # ~1 s (test) / ~5 s (train) on 2 busy cores
    assert ds.synthetic and "SYNTHETIC stand-in, not CIFAR-10" in ds.name and len(ds) == n
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SYNTHETIC" in err and "unreachable" in err


def test_auto_without_offline_ok_raises(nowhere):
    with pytest.raises(FileNotFoundError, match=r"no CIFAR-10 in .* unreachable.*pass one of"):
        load_cifar10(None, offline_ok=False)


def test_auto_finds_local_data(nowhere, monkeypatch):
    found = _write_tfds(nowhere, "test")
    monkeypatch.setattr(data, "_search_candidates", lambda: [nowhere / "absent", found])
    np.testing.assert_array_equal(load_cifar10(None).labels, _split("test")[1])


def _serve_archive(root: Path, monkeypatch, md5: str | None = None) -> None:
    """Points the download at a local archive (a file:// URL) and says the host is reachable."""
    archive = _write_archive(root, "test")
    monkeypatch.setattr(data, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(data, "CIFAR10_MD5", md5 or hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(data, "_host_reachable", lambda *a, **k: True)


def test_auto_downloads_into_cache_when_reachable(nowhere, monkeypatch, capsys):
    _serve_archive(nowhere, monkeypatch)
    ds = load_cifar10(None, "train")
    np.testing.assert_array_equal(ds.images, _split("train")[0])
    assert (nowhere / "cache" / data.CIFAR10_ARCHIVE).is_file()
    assert "downloading" in capsys.readouterr().err


def test_auto_rejects_corrupt_download(nowhere, monkeypatch, capsys):
    _serve_archive(nowhere, monkeypatch, md5="0" * 32)
    assert load_cifar10(None).synthetic
    assert "download failed" in capsys.readouterr().err
    assert not any((nowhere / "cache").iterdir())  # nothing half-written left behind


def test_host_probe_is_bounded():
    start = time.perf_counter()
    assert not data._host_reachable("https://cifar.invalid/x", timeout=0.5)  # RFC 6761 name
    assert time.perf_counter() - start < 2


# --------------------------------------------------------------------------- bad inputs


def _corrupt(name: str, content: bytes):
    def write(root: Path) -> Path:
        (root / name).write_bytes(content)
        return root / name

    return write


def _npz(**arrays):
    def write(root: Path) -> Path:
        np.savez(root / "bad.npz", **arrays)
        return root / "bad.npz"

    return write


def _empty_dir(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def _bad_batches_dir(root: Path) -> Path:
    (root / "test_batch").write_bytes(b"junk")
    return root


_IMG = np.zeros((3, 32, 32, 3), np.uint8)
_LAB = np.zeros(3, np.int64)
BAD_SOURCES = {
    "missing_path": (lambda root: root / "nope", FileNotFoundError, "does not exist.*pass one of"),
    "corrupt_npz": (_corrupt("x.npz", b"not a zip"), ValueError, "not a readable .npz"),
    "npz_missing_label": (_npz(image=_IMG), ValueError, r"lacks \['label'\]"),
    "npz_float_images": (_npz(image=_IMG.astype(np.float32), label=_LAB), ValueError, "uint8"),
    "npz_nchw_images": (
        _npz(image=_IMG.transpose(0, 3, 1, 2), label=_LAB),
        ValueError,
        "N×32×32×3",
    ),
    "npz_float_labels": (_npz(image=_IMG, label=_LAB.astype(float)), ValueError, "integers"),
    "npz_label_range": (_npz(image=_IMG, label=_LAB + 10), ValueError, r"in 0\.\.9"),
    "npz_label_count": (_npz(image=_IMG, label=_LAB[:2]), ValueError, "labels for 3 images"),
    "corrupt_archive": (_corrupt("c.tar.gz", b"garbage"), ValueError, "not the official"),
    "unknown_file": (_corrupt("data.csv", b"1,2"), ValueError, "unknown file type"),
    "empty_dir": (_empty_dir, ValueError, "no prepared tfds cifar10"),
    "bad_pickle": (_bad_batches_dir, ValueError, "not a CIFAR-10 python batch"),
}


@pytest.mark.parametrize("write,error,message", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_bad_source_raises_clear_error(tmp_path, write, error, message):
    with pytest.raises(error, match=message):
        load_cifar10(write(tmp_path))


BAD_CALLS = {
    "dataset_int_images": (
        lambda: Dataset(_IMG.astype(np.int32), _LAB.astype(np.int32), "x"),
        "uint8",
    ),
    "dataset_int64_labels": (lambda: Dataset(_IMG, _LAB, "x"), "int32"),
    "batch_size_zero": (lambda: next(batches(synthetic_cifar10(4), 0)), "positive integer"),
    "batch_size_float": (lambda: num_batches(synthetic_cifar10(4), 2.0), "positive integer"),
    "float16_images": (lambda: data.to_float(_IMG, np.float16), "float32 or float64"),
    "pickle_split": (lambda: data._pickle_batches("validation"), "'train' and 'test'"),
}


@pytest.mark.parametrize("call,message", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_call_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_cifar_shaped():
    a, b, c = (
        synthetic_cifar10(300, seed=0),
        synthetic_cifar10(300, seed=0),
        synthetic_cifar10(300, 1),
    )
    assert a.synthetic and "SYNTHETIC" in a.name
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.labels.dtype == np.int32 and np.bincount(a.labels).tolist() == [30] * 10
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


def test_synthetic_classes_are_learnable_across_seeds():
    """A nearest-class-mean rule fitted on one seed classifies another seed's images."""
    train, test = synthetic_cifar10(2000, seed=0), synthetic_cifar10(500, seed=1)
    x_train = train.images.reshape(len(train), -1).astype(np.float32)
    means = np.stack([x_train[train.labels == c].mean(0) for c in range(10)])
    x_test = test.images.reshape(len(test), -1).astype(np.float32)
    dist = (x_test**2).sum(1)[:, None] - 2 * x_test @ means.T + (means**2).sum(1)[None]
    accuracy = np.mean(dist.argmin(1) == test.labels)
    assert 0.35 < accuracy < 0.9  # learnable, yet not trivial (~0.55 measured; chance 0.1)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize(
    "np_dtype,torch_dtype", [(np.float32, torch.float32), (np.float64, torch.float64)]
)
def test_to_float_is_torch_to_tensor_bitwise(np_dtype, torch_dtype):
    """ToTensor(): `u8.to(float).div(255)`. Division, not multiplication by 1/255 (which
    differs in the last bit for 126 of the 256 values in float32, 24 in float64)."""
    u8 = np.arange(256, dtype=np.uint8)
    want = torch.from_numpy(u8).to(torch_dtype).div(255).numpy()
    got = data.to_float(u8, np_dtype)
    assert got.dtype == np_dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
    assert np.any(u8.astype(np_dtype) * (np_dtype(1) / np_dtype(255)) != want)


BATCHING = {  # (n, batch_size, drop_last) → batch sizes
    "tutorial": ((10_000, 64, True), [64] * 156),
    "keep_last": ((10, 4, False), [4, 4, 2]),
    "drop_last": ((10, 4, True), [4, 4]),
    "exact": ((8, 4, True), [4, 4]),
    "one_big_batch_dropped": ((3, 4, True), []),
    "one_small_batch_kept": ((3, 4, False), [3]),
}


@pytest.mark.parametrize("config,sizes", BATCHING.values(), ids=BATCHING.keys())
def test_batches_sizes_and_order(config, sizes):
    n, batch_size, drop_last = config
    ds = Dataset(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n, dtype=np.int32) % 10, "counting")
    ds.images[:, 0, 0, 0] = np.arange(n) % 256  # tags each image with its index
    got = list(batches(ds, batch_size, drop_last=drop_last))
    assert [len(labels) for _, labels in got] == sizes
    assert num_batches(ds, batch_size, drop_last) == len(sizes)
    if got:
        images = np.concatenate([x for x, _ in got])
        assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(  # dataset order: the tutorial's DataLoader does not shuffle
            images[:, 0, 0, 0], data.to_float(ds.images[: len(images), 0, 0, 0])
        )
        assert all(labels.dtype == np.int32 for _, labels in got)


def test_shuffle_is_a_seeded_permutation_per_epoch():
    ds = Dataset(np.zeros((50, 32, 32, 3), np.uint8), np.zeros(50, np.int32), "x")
    ds.images[:, 0, 0, 0] = np.arange(50)

    def order(**kw):
        seen = [
            x[:, 0, 0, 0] * 255 for x, _ in batches(ds, 10, shuffle=True, dtype=np.float64, **kw)
        ]
        return np.rint(np.concatenate(seen)).astype(int).tolist()

    assert sorted(order()) == list(range(50)) and order() != list(range(50))
    assert order(seed=3, epoch=2) == order(seed=3, epoch=2)
    assert len({tuple(order(seed=s, epoch=e)) for s in (0, 1) for e in (0, 1)}) == 4
