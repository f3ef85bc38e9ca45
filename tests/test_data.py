"""CIFAR-10 loading (every source format, auto mode, bad inputs) and the tutorial's batches.

Hermetic: every dataset here is generated in tmp_path or mocked with `tfds.testing.mock_data`;
nothing is downloaded and the machine's real data folders are never searched. The proxy tests
talk to a stand-in proxy on the loopback interface.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import pickle
import socket
import struct
import tarfile
import threading
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


def _examples(split: str) -> list[bytes]:
    """The split as tfds stores `cifar10`: serialized tf.train.Examples (PNG `image`, `label`,
    `id`), out of `id` order (tfds's write order is shuffled)."""
    from PIL import Image
    from tensorflow_datasets.proto import tf_example_pb2

    images, labels = _split(split)
    out = []
    for i in np.random.default_rng(1).permutation(len(labels)):
        png = io.BytesIO()
        Image.fromarray(images[i]).save(png, format="PNG")
        example = tf_example_pb2.Example()
        feature = example.features.feature
        feature["image"].bytes_list.value.append(png.getvalue())
        feature["label"].int64_list.value.append(int(labels[i]))
        feature["id"].bytes_list.value.append(f"{split}_{i:05d}".encode())
        out.append(example.SerializeToString())
    return out


def _write_tfds(root: Path, split: str) -> Path:
    """A prepared tfds `cifar10` (array_record), as `tfds build` writes it."""
    from array_record.python.array_record_module import ArrayRecordWriter

    folder = root / "tfds" / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    splits = []
    for s in SPLIT_SIZES:
        path = folder / f"cifar10-{s}.array_record-00000-of-00001"
        writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
        for record in _examples(s):
            writer.write(record)
        writer.close()
        _, labels = _split(s)
        template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
        splits.append({"name": s, "filepathTemplate": template, "shardLengths": [str(len(labels))]})
    info = {"name": "cifar10", "version": "3.0.2", "fileFormat": "array_record", "splits": splits}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    (folder / "features.json").write_text(json.dumps(_FEATURES))
    return root / "tfds"


def _tfrecord(records: list[bytes]) -> bytes:
    """TFRecord framing: per record uint64 length, masked CRC-32C of it, data, masked CRC-32C."""
    out = b""
    for r in records:
        n = struct.pack("<Q", len(r))
        crc = data._masked_crc32c
        out += n + struct.pack("<I", crc(n)) + r + struct.pack("<I", crc(r))
    return out


def _write_tfrecord(root: Path, split: str, *, legacy_names: bool = False) -> Path:
    """A tfds `cifar10` prepared in TFRecord format (what `tfds.load` writes by default), the
    train split in two shards; `legacy_names`: tfds's other template, `...-00000-of-00002.tfrecord`.
    """
    folder = root / "tfds" / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    splits = []
    for s in SPLIT_SIZES:
        records = _examples(s)
        shards = np.array_split(np.arange(len(records)), 1 if s == "test" else 2)
        for k, idx in enumerate(shards):
            shard = f"{k:05d}-of-{len(shards):05d}"
            name = (
                f"cifar10-{s}-{shard}.tfrecord" if legacy_names else f"cifar10-{s}.tfrecord-{shard}"
            )
            (folder / name).write_bytes(_tfrecord([records[i] for i in idx]))
        splits.append({"name": s, "shardLengths": [str(len(idx)) for idx in shards]})
    info = {"name": "cifar10", "version": "3.0.2", "splits": splits}  # fileFormat: the default
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return root / "tfds"


SOURCES = {
    "npz": _write_npz,
    "archive": _write_archive,
    "batches_dir": _write_batches_dir,
    "batches_parent_dir": lambda root, split: _write_batches_dir(root, split).parent,
    "tfds_data_dir": _write_tfds,
    "tfds_dataset_dir": lambda root, split: _write_tfds(root, split) / "cifar10",
    "tfds_version_dir": lambda root, split: _write_tfds(root, split) / "cifar10" / "3.0.2",
    "tfds_tfrecord": _write_tfrecord,
    "tfds_tfrecord_legacy_names": lambda root, split: _write_tfrecord(
        root, split, legacy_names=True
    ),
    "tfds_tfrecord_dataset_dir": lambda root, split: _write_tfrecord(root, split) / "cifar10",
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
def test_auto_falls_back_to_labelled_synthetic_fast(nowhere, monkeypatch, capsys, split, n):
    """Offline, the fallback costs one bounded probe and no download attempt (what keeps it to
    seconds; asserted structurally, not by a clock, so the verdict cannot depend on load)."""
    probes = []
    monkeypatch.setattr(data, "_host_reachable", lambda *a, **k: probes.append((a, k)) or False)
    monkeypatch.setattr(data, "_download", lambda *a, **k: pytest.fail("tried to download"))
    ds = load_cifar10(None, split)
    assert probes == [((), {})]  # one probe, with its default PROBE_TIMEOUT_S bound
    assert ds.synthetic and "SYNTHETIC stand-in, not CIFAR-10" in ds.name and len(ds) == n
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SYNTHETIC" in err and "unreachable" in err


def test_probe_returns_when_the_host_never_answers(no_proxies, monkeypatch):
    """A resolver or connect that hangs cannot hold the caller: the probe gives up at its
    timeout (the test would hang, not fail, if it did not)."""
    never = threading.Event()

    def hang(*args, **kwargs):
        never.wait()

    monkeypatch.setattr(data.socket, "create_connection", hang)
    assert data._host_reachable(timeout=0.05) is False


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


def test_host_probe_of_an_unresolvable_host_is_false(no_proxies):
    assert not data._host_reachable("https://cifar.invalid/x", timeout=0.5)  # RFC 6761 name


@pytest.fixture
def no_proxies(monkeypatch):
    """No proxy variables from the machine running the tests (urllib reads any `*_proxy`)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


class _FakeProxy:
    """An HTTP proxy stand-in on the loopback interface: records each request's head and
    answers `status` (None: says nothing until the test ends)."""

    def __init__(self, status: bytes | None):
        self.status, self.requests, self.done = status, [], threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                head += chunk
            self.requests.append(head.decode("latin-1"))
            if self.status is None:
                self.done.wait(10)
            else:
                conn.sendall(b"HTTP/1.1 " + self.status + b"\r\n\r\n")

    def close(self) -> None:
        self.done.set()
        self.sock.close()


# (proxy answer, env: {name: value with {port}}, reachable, proxy asked) for
# https://cifar.invalid/x, a name that never resolves (RFC 6761): only the proxy can reach it.
PROXY_CASES = {
    "HTTPS_PROXY_tunnel_opens": (
        b"200 Connection established",
        {"HTTPS_PROXY": "{url}"},
        True,
        True,
    ),
    "https_proxy_lowercase": (b"200 OK", {"https_proxy": "{url}"}, True, True),
    "bare_host_port": (b"200 OK", {"HTTPS_PROXY": "127.0.0.1:{port}"}, True, True),
    "proxy_refuses": (b"403 Forbidden", {"HTTPS_PROXY": "{url}"}, False, True),
    "proxy_cannot_reach_host": (b"502 Bad Gateway", {"HTTPS_PROXY": "{url}"}, False, True),
    "silent_proxy": (None, {"HTTPS_PROXY": "{url}"}, False, True),
    "no_proxy_goes_direct": (
        b"200 OK",
        {"HTTPS_PROXY": "{url}", "no_proxy": ".invalid"},
        False,
        False,
    ),
    "http_proxy_only": (b"200 OK", {"http_proxy": "{url}"}, False, False),
}


@pytest.mark.parametrize("answer,env,reachable,asked", PROXY_CASES.values(), ids=PROXY_CASES.keys())
def test_probe_goes_through_the_https_proxy(no_proxies, monkeypatch, answer, env, reachable, asked):
    """The probe asks the proxy urllib's download would use (`https_proxy`/`HTTPS_PROXY`, not
    for `no_proxy` hosts) for a tunnel, and is bounded by its timeout when the proxy is silent."""
    proxy = _FakeProxy(answer)
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        for name, value in env.items():
            monkeypatch.setenv(name, value.format(url=url, port=proxy.port))
        # A silent proxy gives up at the timeout (see test_probe_returns_when_...).
        assert data._host_reachable("https://cifar.invalid/x", timeout=1.0) is reachable
        if asked:
            assert proxy.requests and proxy.requests[0].startswith(
                "CONNECT cifar.invalid:443 HTTP/1.1\r\n"
            )
        else:
            assert not proxy.requests
    finally:
        proxy.close()


def test_probe_sends_the_proxy_credentials(no_proxies, monkeypatch):
    proxy = _FakeProxy(b"200 OK")
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://me:p%40ss@127.0.0.1:{proxy.port}")
        assert data._host_reachable("https://cifar.invalid/x", timeout=1.0)
        token = base64.b64encode(b"me:p@ss").decode()
        assert f"\r\nProxy-Authorization: Basic {token}\r\n" in proxy.requests[0]
    finally:
        proxy.close()


def test_unreachable_message_names_the_proxy_not_its_password(nowhere, monkeypatch, capsys):
    monkeypatch.setenv("HTTPS_PROXY", "http://me:secret@proxy.example:3128")
    assert load_cifar10(None).synthetic
    err = capsys.readouterr().err
    assert "unreachable through the proxy http://proxy.example:3128" in err
    assert "secret" not in err


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


# --------------------------------------------------------------------------- TFRecord format


def test_crc32c_check_value():
    """CRC-32C of "123456789" is 0xE3069283 (RFC 3720, B.4), masked as TFRecord masks it."""
    crc = 0xE3069283
    assert data._masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def _damage_shard(damage):
    def write(root: Path) -> Path:
        tfds_dir = _tfrecord_dir(root)
        shard = next((tfds_dir / "cifar10" / "3.0.2").glob("cifar10-test.tfrecord-*"))
        shard.write_bytes(damage(shard.read_bytes()))
        return tfds_dir

    return write


def _tfrecord_dir(root: Path) -> Path:
    return _write_tfrecord(root, "test")


def _info_says(n: int):
    def write(root: Path) -> Path:
        tfds_dir = _tfrecord_dir(root)
        info_path = tfds_dir / "cifar10" / "3.0.2" / "dataset_info.json"
        info = json.loads(info_path.read_text())
        info["splits"][0]["shardLengths"] = [str(n)]
        info_path.write_text(json.dumps(info))
        return tfds_dir

    return write


BAD_TFRECORDS = {  # (writer, split, message)
    "gzipped_shard": (
        _damage_shard(gzip.compress),
        "test",
        "not an uncompressed TFRecord",
    ),
    "truncated_shard": (_damage_shard(lambda b: b[:-10]), "test", "truncated TFRecord"),
    "junk_record": (
        _damage_shard(lambda b: _tfrecord([b"junk"] * 7)),
        "test",
        "record 0 is not a cifar10 example",
    ),
    "count_differs": (_info_says(99), "test", "dataset_info.json says 99"),
    "slice": (_tfrecord_dir, "test[:3]", r"TFRecord format with splits \['test', 'train'\]"),
    "unknown_split": (_tfrecord_dir, "validation", "'validation' is not one of them"),
}


@pytest.mark.parametrize("write,split,message", BAD_TFRECORDS.values(), ids=BAD_TFRECORDS.keys())
def test_bad_tfrecord_raises_clear_error(tmp_path, write, split, message):
    with pytest.raises(ValueError, match=message):
        load_cifar10(write(tmp_path), split)


# --------------------------------------------------------------------------- the pickles


def _batch(protocol: int, numpy_1_names: bool = False) -> bytes:
    """A valid one-image batch with every key the official ones have; `numpy_1_names`: the
    array as the official archive names its reconstructor (numpy 1's `numpy.core`)."""
    images, labels = _split("test")
    blob = pickle.dumps(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": labels[:2].tolist(),
            b"data": images[:2].transpose(0, 3, 1, 2).reshape(2, 3072),
            b"filenames": [b"a.png", b"b.png"],
        },
        protocol=protocol,
    )
    if numpy_1_names:
        assert protocol == 2  # GLOBAL opcodes: "module\nname\n", no length to fix up
        blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return blob


VALID_PICKLES = {
    "official_numpy1_protocol2": _batch(2, numpy_1_names=True),
    "numpy2_protocol2": _batch(2),
    "numpy2_protocol4": _batch(4),
    "numpy2_protocol5": _batch(5),
}


@pytest.mark.parametrize("blob", VALID_PICKLES.values(), ids=VALID_PICKLES.keys())
def test_restricted_unpickler_loads_cifar_batches(blob):
    images, labels = data._from_pickles([blob], "batch")
    np.testing.assert_array_equal(images, _split("test")[0][:2])
    np.testing.assert_array_equal(labels, _split("test")[1][:2])


class _Reduces:
    """Pickles as a call of `fn(*args)` at load time: what a malicious pickle does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# (the object under b"data", the global named in the refusal). Each would leave `pwned` behind.
MALICIOUS = {
    "os_system": (lambda p: _Reduces(os.system, f"touch {p}"), r"posix\.system"),
    "builtins_exec": (lambda p: _Reduces(exec, f"open({str(p)!r}, 'w')"), r"builtins\.exec"),
    "numpy_other_function": (lambda p: _Reduces(np.save, str(p), 0), r"numpy\.save"),
    "pathlib_write": (lambda p: _Reduces(Path.write_text, p, "x"), r"pathlib\.Path\.write_text"),
}


@pytest.mark.parametrize("where", ["batches_dir", "archive"])
@pytest.mark.parametrize("payload,named", MALICIOUS.values(), ids=MALICIOUS.keys())
def test_restricted_unpickler_refuses_other_globals(tmp_path, where, payload, named):
    """Any global but numpy's array reconstruction is refused before it is called."""
    pwned = tmp_path / "pwned"
    blob = pickle.dumps({b"data": payload(pwned), b"labels": [0]})
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(blob)
    source = folder
    if where == "archive":
        source = tmp_path / data.CIFAR10_ARCHIVE
        with tarfile.open(source, "w:gz") as tar:
            tar.add(folder / "test_batch", "cifar-10-batches-py/test_batch")
    with pytest.raises(
        ValueError, match=f"not a CIFAR-10 python batch.*refused to load global {named}"
    ):
        load_cifar10(source, "test")
    assert not list(tmp_path.glob("pwned*"))


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
