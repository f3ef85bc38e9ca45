"""CIFAR-10 as numpy arrays, and the tutorial's batches (`ToTensor()` scaling, batch 64).

Sources (`load_cifar10(source, split)`), all decoded once into a uint8 (N,32,32,3) array:

- a tensorflow-datasets `data_dir` holding a prepared `cifar10` in `array_record` format, read
  with `tfds.data_source` without TensorFlow (records sorted by `id`, the split's order), or in
  tfds's default TFRecord format (`*.tfrecord-*` shards, what `tfds.load` prepares), read here
  record by record, also without TensorFlow (whole splits only);
- the official `cifar-10-python.tar.gz`, or the `cifar-10-batches-py` folder it extracts to
  (what torchvision downloads), unpickled by a restricted unpickler that builds only what the
  format holds (dicts, lists, bytes, numpy arrays) and refuses any other global;
- an `.npz` with `image` (uint8 N×32×32×3) and `label` (integers 0..9, N);
- None: look for a prepared tfds `cifar10` under `$TFDS_DATA_DIR` and `~/tensorflow_datasets`
  and for the official archive in the cache (`$JAXOPT_LAB_DATA`, default
  `~/.cache/jaxopt_lab`); if none is there and the official host answers within 3 s (through
  the proxy in `https_proxy`/`HTTPS_PROXY` where one is set, as urllib uses it), download the
  archive into the cache (163 MB, MD5-checked); otherwise say so in one line and return a
  clearly labelled synthetic stand-in (`synthetic_cifar10`), or raise if `offline_ok=False`.

`batches` then yields float images in [0, 1] computed exactly like torchvision's `ToTensor()`
(`u8.float().div(255)`), so a JAX and a torch trainer fed from it see bit-identical inputs.

Length: five readers (npz, python pickles, tfds array_record, tfds TFRecord, the download), the
auto mode, the synthetic stand-in and the batching share `Dataset`'s checks and one message of
what to pass (`HOW_TO_GET_DATA`); each part is short, and the sections below keep them apart.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import re
import socket
import struct
import sys
import tarfile
import threading
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "Dataset",
    "batches",
    "load_cifar10",
    "num_batches",
    "synthetic_cifar10",
    "to_float",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
PROBE_TIMEOUT_S = 3.0
_SYNTHETIC_TASK_SEED = 20091  # fixes the synthetic classes' patterns, whatever the sample seed

HOW_TO_GET_DATA = (
    "pass one of: a tensorflow-datasets data_dir holding a prepared `cifar10` (array_record "
    "format, e.g. `tfds build cifar10 --file_format=array_record` on a machine with "
    "TensorFlow, or tfds's default TFRecord format), the official cifar-10-python.tar.gz or its "
    "extracted cifar-10-batches-py "
    "folder, or an .npz with `image` (uint8 N×32×32×3) and `label` (integers 0..9, N)"
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A decoded image-classification set, CIFAR-10-shaped.

    Attributes:
      images: uint8 (N, 32, 32, 3), HWC as stored in CIFAR-10.
      labels: int32 (N,), class indices 0..9 (see `CIFAR10_CLASSES`).
      name: human description, including where the data came from.
      synthetic: True for `synthetic_cifar10`'s stand-in, which is not CIFAR-10.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    synthetic: bool = False

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: images must be a uint8 numpy array, got {_desc(images)}"
            )
        if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"{self.name}: images must be N×32×32×3, got shape {images.shape}")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int32:
            raise ValueError(
                f"{self.name}: labels must be an int32 numpy array, got {_desc(labels)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"{self.name}: {labels.shape} labels for {images.shape[0]} images (need one each)"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
            raise ValueError(
                f"{self.name}: labels must be in 0..9, got {labels.min()}..{labels.max()}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _desc(a: Any) -> str:
    return f"{type(a).__name__} of dtype {a.dtype}" if hasattr(a, "dtype") else type(a).__name__


def _as_labels(labels: Any, where: str) -> np.ndarray:
    """Integer labels → int32, refusing floats/bools and out-of-range values."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{where}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int32)


# --------------------------------------------------------------------------- the sources


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            arrays = {k: f[k] for k in ("image", "label") if k in files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(
            f"{path}: not a readable .npz ({e}); expected `image` uint8 N×32×32×3 and `label` "
            "integers N, e.g. np.savez(path, image=images, label=labels)"
        ) from e
    if len(arrays) < 2:
        raise ValueError(
            f"{path}: .npz lacks {sorted({'image', 'label'} - files)} (has {sorted(files)}); "
            "expected `image` uint8 N×32×32×3 and `label` integers N"
        )
    images, labels = arrays["image"], arrays["label"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{path}: `image` must be uint8 N×32×32×3, got {images.dtype} {images.shape}"
        )
    return Dataset(
        images, _as_labels(labels, str(path)), f"CIFAR-10 from {path} ({len(labels):,} images)"
    )


def _pickle_batches(split: str) -> list[str]:
    if split == "test":
        return ["test_batch"]
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    raise ValueError(f"split {split!r}: the CIFAR-10 python archive has 'train' and 'test'")


def _pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 python batch may name, and what each resolves to.

    A batch is a dict of bytes, a list of int labels, a list of bytes file names and one uint8
    numpy array. The official archive (Python 2, numpy 1) pickles the array as
    `numpy.core.multiarray._reconstruct(numpy.ndarray, ...)` with a `numpy.dtype`; copies
    re-pickled by Python 3 with numpy 2 name `numpy._core.multiarray._reconstruct` (protocol
    2-4) or `numpy._core.numeric._frombuffer` (protocol 5), and at protocol 2 write bytes as
    `_codecs.encode(str, "latin1")`. Each resolves to the function itself, so no module is
    imported by name (nor numpy 2's deprecated `numpy.core` alias).
    """
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch; refuses every global but `_pickle_globals()`'s.

    A pickle can name any importable callable and call it while loading (`os.system`,
    `builtins.eval`, ...); a batch needs only numpy's array reconstruction, so nothing else is
    resolved, and what is refused is named in the error.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _pickle_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: a CIFAR-10 python batch holds only "
                "dicts, lists, bytes and numpy arrays (a tampered or foreign pickle?)"
            ) from None


def _unpickle_batch(blob: bytes) -> Any:
    """`pickle.loads(blob, encoding="bytes")` through `_BatchUnpickler` (the official batches
    were written by Python 2: `encoding="bytes"` keeps its str keys and data as bytes)."""
    return _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()


def _from_pickles(blobs: Sequence[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches (pickled dicts, `data` uint8 N×3072 in CHW order) → arrays."""
    images, labels = [], []
    for blob in blobs:
        try:
            d = _unpickle_batch(blob)  # the official format is a pickle: restricted, see above
            data, lab = d[b"data"], d[b"labels"]
        except Exception as e:
            raise ValueError(f"{where}: not a CIFAR-10 python batch ({e})") from e
        images.append(np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_as_labels(lab, where))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _load_archive(path: Path, split: str) -> Dataset:
    names = _pickle_batches(split)
    try:
        with tarfile.open(path, "r:gz") as tar:
            blobs = [tar.extractfile(f"cifar-10-batches-py/{n}").read() for n in names]
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise ValueError(
            f"{path}: not the official CIFAR-10 python archive ({e}); {HOW_TO_GET_DATA}"
        ) from e
    images, labels = _from_pickles(blobs, str(path))
    return Dataset(images, labels, f"CIFAR-10 {split} from {path} ({len(labels):,} images)")


def _load_pickle_dir(path: Path, split: str) -> Dataset:
    blobs = [(path / n).read_bytes() for n in _pickle_batches(split)]
    images, labels = _from_pickles(blobs, str(path))
    return Dataset(images, labels, f"CIFAR-10 {split} from {path} ({len(labels):,} images)")


def _tfds_data_dir(path: Path) -> Path | None:
    """The tfds data_dir for a path to it, to its `cifar10/`, or to `cifar10/<version>/`."""
    for data_dir in (path, path.parent, path.parent.parent):
        ds_dir = data_dir / "cifar10"
        if ds_dir.is_dir() and any(ds_dir.glob("*/dataset_info.json")):
            if path in (data_dir, ds_dir) or path.parent == ds_dir:
                return data_dir
    return None


def _decode_image(encoded: bytes) -> np.ndarray:
    """An encoded image (PNG, as tfds stores CIFAR-10; JPEG also accepted) → uint8 (H, W, 3)."""
    from PIL import Image, PngImagePlugin

    if encoded.startswith(b"\x89PNG"):  # direct plugin: ~20% faster than Image.open's sniffing
        im = PngImagePlugin.PngImageFile(io.BytesIO(encoded))
    else:
        im = Image.open(io.BytesIO(encoded), formats=("JPEG",))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.frombuffer(im.tobytes(), np.uint8).reshape(im.height, im.width, 3)


def _examples_to_dataset(records: Sequence[Any], where: str, name: str) -> Dataset:
    """tfds `cifar10` records → a `Dataset` sorted by `id` (`train_NNNNN` / `test_NNNNN`).

    Records are serialized `tf.train.Example`s (parsed here with protobuf, their PNGs decoded
    with PIL: ~2× faster than tfds's per-record decoding, ~2 s vs ~4.4 s for the 10,000 test
    images on 2 busy CPU cores, PIL's PNG decode being most of it), or dicts tfds already
    decoded (e.g. `tfds.testing.mock_data`).
    """
    n = len(records)
    if n and isinstance(records[0], bytes):
        from tensorflow_datasets.proto import tf_example_pb2
    images = np.empty((n, *IMAGE_SHAPE), np.uint8)
    labels = np.empty(n, np.int64)
    ids = []
    for i, rec in enumerate(records):
        if isinstance(rec, bytes):
            try:
                f = tf_example_pb2.Example.FromString(rec).features.feature
                image = _decode_image(f["image"].bytes_list.value[0])
                labels[i] = f["label"].int64_list.value[0]
                ids.append(f["id"].bytes_list.value[0].decode())
            except Exception as e:  # protobuf's DecodeError, PIL's errors, a missing feature
                raise ValueError(
                    f"{where}: record {i} is not a cifar10 example (image, label, id): {e!r}"
                ) from e
        else:
            image = np.asarray(rec["image"])
            labels[i] = rec["label"]
            ids.append(rec["id"].decode() if isinstance(rec["id"], bytes) else str(rec["id"]))
        if image.shape != IMAGE_SHAPE:
            raise ValueError(f"{where}: record {ids[-1]} has image shape {image.shape}")
        images[i] = image
    order = np.argsort(np.asarray(ids), kind="stable")  # the split's order
    return Dataset(images[order], _as_labels(labels[order], where), name)


def _load_tfds(data_dir: Path, split: str) -> Dataset:
    version_dir = _version_dir(data_dir)
    if not any(version_dir.glob("*.array_record-*")) and _tfrecord_shards(version_dir, "*"):
        return _load_tfrecord(data_dir, version_dir, split)
    import tensorflow_datasets as tfds

    try:
        src = tfds.data_source(
            "cifar10",
            split=split,
            data_dir=os.fspath(data_dir),
            download=False,
            builder_kwargs={"file_format": "array_record"},
        )
    except Exception as e:
        raise ValueError(
            f"{data_dir}: cannot open the prepared tfds cifar10 split {split!r} ({e}); "
            f"{HOW_TO_GET_DATA}"
        ) from e
    n = len(src)
    raw = src.data_source
    if n and isinstance(raw[0], bytes):  # serialized records, read in one call
        records: list[Any] = list(raw.__getitems__(list(range(n))))
    else:  # decoded by tfds (e.g. `tfds.testing.mock_data`), one record at a time
        records = [src[i] for i in range(n)]
    return _examples_to_dataset(
        records, str(data_dir), f"CIFAR-10 {split} from tfds data_dir {data_dir} ({n:,} images)"
    )


# --------------------------------------------------------------------------- tfds TFRecord


def _version_dir(data_dir: Path) -> Path:
    """The newest prepared version of `cifar10` under `data_dir` (tfds also reads the newest)."""
    dirs = [p.parent for p in (data_dir / "cifar10").glob("*/dataset_info.json")]
    return max(dirs, key=lambda d: [int(x) if x.isdigit() else -1 for x in d.name.split(".")])


def _tfrecord_shards(version_dir: Path, split: str) -> list[Path]:
    """The split's TFRecord shards, in either of tfds's file name templates (`*`: any split)."""
    names = (f"cifar10-{split}.tfrecord-*", f"cifar10-{split}-*-of-*.tfrecord")
    return sorted({p for pattern in names for p in version_dir.glob(pattern)})


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated right by 15 bits plus a constant."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfrecord_records(path: Path) -> list[bytes]:
    """The records of an uncompressed TFRecord file, without TensorFlow.

    Each record is: uint64 length, the length's masked CRC-32C (uint32), the data, the data's
    masked CRC-32C (little-endian). The length checksums are verified (they tell a TFRecord
    file from anything else, compressed shards included); the data checksums are not (Python's
    standard library has no CRC-32C, and in pure Python it would take minutes for 180 MB): a
    damaged record fails to parse as a `tf.train.Example` or to decode as a PNG instead.
    """
    buf = path.read_bytes()
    records, at = [], 0
    while at < len(buf):
        if at + 12 > len(buf) or struct.unpack_from("<I", buf, at + 8)[0] != _masked_crc32c(
            buf[at : at + 8]
        ):
            raise ValueError(
                f"{path}: not an uncompressed TFRecord file (bad record header at byte {at}); "
                f"rebuild the dataset, or {HOW_TO_GET_DATA}"
            )
        start = at + 12
        end = start + struct.unpack_from("<Q", buf, at)[0]
        if end + 4 > len(buf):
            raise ValueError(f"{path}: truncated TFRecord file (record at byte {at})")
        records.append(buf[start:end])
        at = end + 4
    return records


def _load_tfrecord(data_dir: Path, version_dir: Path, split: str) -> Dataset:
    """A tfds `cifar10` prepared in TFRecord format (tfds's default): its shards, read here."""
    info = json.loads((version_dir / "dataset_info.json").read_text() or "{}")
    lengths = {
        s.get("name"): sum(int(n) for n in s.get("shardLengths", []))
        for s in info.get("splits", [])
    }
    shards = _tfrecord_shards(version_dir, split)
    if not re.fullmatch(r"\w+", split) or not shards:
        found = sorted({re.split(r"[.-]", p.name)[1] for p in _tfrecord_shards(version_dir, "*")})
        raise ValueError(
            f"{version_dir}: a tfds cifar10 in TFRecord format with splits {found}, read here "
            f"whole; {split!r} is not one of them (for slices convert it to array_record where "
            f"TensorFlow is installed: `tfds convert_format --dataset_version_dir={version_dir} "
            "--out_file_format=array_record`)"
        )
    records = [r for shard in shards for r in _tfrecord_records(shard)]
    if split in lengths and lengths[split] != len(records):
        raise ValueError(
            f"{version_dir}: {len(records):,} records in the {split!r} shards, "
            f"dataset_info.json says {lengths[split]:,} (an incomplete copy?)"
        )
    return _examples_to_dataset(
        records,
        str(version_dir),
        f"CIFAR-10 {split} from tfds data_dir {data_dir} (TFRecord, {len(records):,} images)",
    )


def _load_path(path: Path, split: str) -> Dataset:
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 data {path} does not exist; {HOW_TO_GET_DATA}")
    if path.is_file():
        if path.suffix == ".npz":
            return _load_npz(path)
        if path.name.endswith((".tar.gz", ".tgz")):
            return _load_archive(path, split)
        raise ValueError(f"{path}: unknown file type (want .npz or .tar.gz); {HOW_TO_GET_DATA}")
    if (path / "test_batch").is_file() or (path / "cifar-10-batches-py").is_dir():
        return _load_pickle_dir(
            path if (path / "test_batch").is_file() else path / "cifar-10-batches-py", split
        )
    data_dir = _tfds_data_dir(path)
    if data_dir is None:
        raise ValueError(f"{path}: no prepared tfds cifar10 in this folder; {HOW_TO_GET_DATA}")
    return _load_tfds(data_dir, split)


# --------------------------------------------------------------------------- auto mode


def _cache_dir() -> Path:
    return Path(os.environ.get("JAXOPT_LAB_DATA", "~/.cache/jaxopt_lab")).expanduser()


def _search_candidates() -> list[Path]:
    """Where `load_cifar10(None)` looks, in order: tfds data_dirs, then the download cache."""
    dirs = []
    if os.environ.get("TFDS_DATA_DIR"):
        dirs.append(Path(os.environ["TFDS_DATA_DIR"]).expanduser())
    dirs.append(Path("~/tensorflow_datasets").expanduser())
    return [*dirs, _cache_dir() / CIFAR10_ARCHIVE]


def _find_local() -> Path | None:
    for cand in _search_candidates():
        if cand.is_file() or (cand.is_dir() and _tfds_data_dir(cand) is not None):
            return cand
    return None


def _proxy_for(url: str) -> str | None:
    """The proxy urllib's `urlopen` (the download) uses for `url`: `https_proxy`/`HTTPS_PROXY`
    for an https URL (`http_proxy` for http), unless `no_proxy` names its host; else None."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _without_credentials(proxy: str) -> str:
    """`proxy` as it may be shown: `scheme://host:port`, without `user:password@`."""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _tunnel_opens(proxy: str, host: str, port: int, timeout: float) -> bool:
    """Whether the HTTP proxy `proxy` answers 200 to `CONNECT host:port` (the tunnel urllib
    opens through it for an https download), sending its `user:password@` as Basic auth."""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # e.g. socks5://: urllib cannot download through it either
    request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        secret = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        request += f"Proxy-Authorization: Basic {token}\r\n"
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as s:
        s.sendall(f"{request}\r\n".encode("latin-1"))
        status = s.makefile("rb").readline(1024).split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"


def _host_reachable(url: str = CIFAR10_URL, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the download host answers within `timeout` seconds.

    Directly: a TCP connection to it opens (DNS included). Where urllib's download would go
    through a proxy (`_proxy_for`: `https_proxy`/`HTTPS_PROXY`, minus `no_proxy`), the proxy
    opens a tunnel to it (`_tunnel_opens`). Runs in a daemon thread so that a hanging resolver
    or a silent proxy cannot hold the caller past `timeout`.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = _proxy_for(url)
    ok: list[bool] = []

    def probe() -> None:
        try:
            if proxy is not None:
                ok.append(_tunnel_opens(proxy, host, port, timeout))
            else:
                with socket.create_connection((host, port), timeout=timeout):
                    ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok) and ok[0]


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetches `url` into `dest` (via a `.part` file), checking its MD5; one attempt, no retry."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=30) as r, open(part, "wb") as f:
        while chunk := r.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != md5:
        part.unlink()
        raise ValueError(f"{url}: MD5 {h.hexdigest()} != expected {md5}; download corrupt")
    part.replace(dest)


def _say(msg: str) -> None:
    print(f"jaxopt_lab.cifar.data: {msg}", file=sys.stderr, flush=True)


def load_cifar10(
    source: str | os.PathLike | None, split: str = "test", *, offline_ok: bool = True
) -> Dataset:
    """CIFAR-10 `split` as a `Dataset` of uint8 (N,32,32,3) images and int32 (N,) labels.

    Args:
      source: where to read it (see the module docstring): a tfds data_dir with a prepared
        `cifar10` (array_record), `cifar-10-python.tar.gz`, a `cifar-10-batches-py` folder, an
        `.npz` (`image` uint8 N×32×32×3, `label` int N; holds one set, so `split` is ignored),
        or None to search the usual places and download if the host is reachable.
      split: "test" (10,000 images, the tutorial's) or "train" (50,000). With tfds, any tfds
        split string ("train[:1000]" slices tfds's stored order, before sorting by `id`).
      offline_ok: with `source=None`, when no data is found or downloadable: True prints one
        line to stderr and returns `synthetic_cifar10` (`synthetic=True`; 10,000 images, seed 0
        for "test", 50,000, seed 1 for "train"); False raises.

    Returns:
      The dataset, in the split's original order (tfds records sorted by their `id`).

    Raises:
      FileNotFoundError: `source` does not exist, or nothing found with `offline_ok=False`.
      ValueError: `source` is unreadable or not CIFAR-10-shaped (the message says what to pass).
    """
    if source is not None:
        return _load_path(Path(source).expanduser(), split)
    found = _find_local()
    if found is not None:
        return _load_path(found, split)
    archive = _cache_dir() / CIFAR10_ARCHIVE
    looked = ", ".join(str(p) for p in _search_candidates())
    if _host_reachable():
        _say(f"no local CIFAR-10; downloading {CIFAR10_URL} (163 MB) to {archive}")
        try:
            _download(CIFAR10_URL, archive, CIFAR10_MD5)
            return _load_archive(archive, split)
        except (OSError, ValueError) as e:
            problem = f"the download failed ({e})"
    else:
        proxy = _proxy_for(CIFAR10_URL)
        via = f" through the proxy {_without_credentials(proxy)}" if proxy else ""
        problem = f"{urllib.parse.urlsplit(CIFAR10_URL).hostname} is unreachable{via}"
    if not offline_ok:
        raise FileNotFoundError(f"no CIFAR-10 in {looked} and {problem}; {HOW_TO_GET_DATA}")
    train = split.startswith("train")  # same task, disjoint samples per split
    ds = synthetic_cifar10(50_000 if train else 10_000, seed=1 if train else 0)
    _say(
        f"no CIFAR-10 in {looked} and {problem}: using a SYNTHETIC stand-in, not CIFAR-10 "
        "(pass --data with a tfds data_dir, cifar-10-python.tar.gz or an .npz for real data)"
    )
    return ds


# --------------------------------------------------------------------------- synthetic stand-in


def synthetic_cifar10(num_examples: int = 10_000, seed: int = 0) -> Dataset:
    """A deterministic CIFAR-10-shaped stand-in whose classes are learnable (NOT CIFAR-10).

    Each class has a fixed random low-frequency colour pattern (4×4 blocks of 8×8 pixels, the
    same for every `seed` and size, so sets drawn with different seeds are train/test splits of
    one task); an image is 127.5 + contrast·pattern[label] + low-frequency clutter + pixel
    noise, clipped to uint8. The class signal is linear in the pixels, so the tutorial's
    (linear + max-pool) network learns it; the clutter keeps it about as hard as the tutorial's
    CIFAR-10 result (a nearest-class-mean classifier scores ~57% on it, chance is 10%).

    Args:
      num_examples: N.
      seed: selects the images and labels; the same seed and N give the same arrays on every
        platform (numpy's PCG64).

    Returns:
      `Dataset` with `synthetic=True`, labels balanced over the 10 classes in random order.
    """
    patterns = np.random.default_rng(_SYNTHETIC_TASK_SEED).standard_normal((10, 4, 4, 3))
    patterns = patterns.astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_examples) % 10).astype(np.int32)
    images = np.empty((num_examples, *IMAGE_SHAPE), np.uint8)

    def up(x: np.ndarray) -> np.ndarray:  # (n,4,4,3) → (n,32,32,3), 8×8 blocks
        return np.repeat(np.repeat(x, 8, axis=1), 8, axis=2)

    for lo in range(0, num_examples, 2048):  # chunks keep the float temporaries small
        hi = min(lo + 2048, num_examples)
        contrast = rng.uniform(5.0, 15.0, (hi - lo, 1, 1, 1)).astype(np.float32)
        clutter = rng.standard_normal((hi - lo, 4, 4, 3), np.float32)
        noise = rng.standard_normal((hi - lo, *IMAGE_SHAPE), np.float32)
        x = 127.5 + contrast * up(patterns[labels[lo:hi]]) + 40.0 * up(clutter) + 20.0 * noise
        images[lo:hi] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return Dataset(
        images,
        labels,
        f"SYNTHETIC stand-in, not CIFAR-10 ({num_examples:,} generated images, seed {seed})",
        synthetic=True,
    )


# --------------------------------------------------------------------------- batching


def to_float(images_u8: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """torchvision `ToTensor()` scaling: `float(u8) / 255`, bit-identical to torch's.

    torch computes `img.to(float).div(255)`: a correctly rounded IEEE division per element
    (its CPU kernel divides; it multiplies by the reciprocal only for half/bfloat16). numpy's
    `/` is the same correctly rounded division, so the results agree bit for bit, whereas
    `u8 * (1/255)` differs in the last bit for some values.

    Args:
      images_u8: uint8 array of any shape.
      dtype: float32 (torch's default) or float64.

    Returns:
      Array of `dtype`, values in [0, 1], same shape.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if images_u8.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images_u8.dtype}")
    return images_u8.astype(dtype) / dtype.type(255)


def num_batches(ds: Dataset, batch_size: int = 64, drop_last: bool = True) -> int:
    """How many batches `batches(ds, batch_size, drop_last=drop_last)` yields."""
    _check_batch_size(batch_size)
    n = len(ds)
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_batch_size(batch_size: int) -> None:
    if (
        not isinstance(batch_size, int | np.integer)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def batches(
    ds: Dataset,
    batch_size: int = 64,
    *,
    drop_last: bool = True,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    dtype: Any = np.float32,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (images, labels) batches, like the tutorial's `DataLoader`.

    Defaults are the tutorial's: batch 64, in dataset order (its DataLoader does not shuffle),
    the last partial batch dropped (10,000 test images → 156 batches).

    Args:
      ds: the dataset.
      batch_size: images per batch.
      drop_last: drop the final batch if it has fewer than `batch_size` images.
      shuffle: visit the images in the order `np.random.default_rng([seed, epoch]).permutation`,
        a different, reproducible order per (seed, epoch).
      seed, epoch: select the shuffle order; ignored without `shuffle`.
      dtype: float32 or float64 images.

    Yields:
      images (B, 32, 32, 3) of `dtype` in [0, 1] (`to_float`: exactly `ToTensor()`'s values,
      in NHWC; torch wants `.permute(0, 3, 1, 2)`), labels (B,) int32.
    """
    _check_batch_size(batch_size)
    n = len(ds)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
    for i in range(num_batches(ds, batch_size, drop_last)):
        sl = slice(i * batch_size, min((i + 1) * batch_size, n))
        idx = sl if order is None else order[sl]
        yield to_float(ds.images[idx], dtype), ds.labels[idx]
