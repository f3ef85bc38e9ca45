"""``jol.sparse_adam`` against ``torch.optim.SparseAdam``, step by step, params and state.

The generic parity harness feeds dense gradients, which SparseAdam rejects (as torch does), so
this file has its own table, ``SPARSE_CASES``: each row names the hyper-parameters and, per
parameter leaf, how its sparse gradients are drawn -- a random subset of rows (row-wise, like
``nn.Embedding(sparse=True)``) or of elements, each index held at most ``max_mult`` times,
values 1e-3..1e3 with random signs and 10% zeros, an empty gradient every 17th step, and
optionally BCOO padding (out-of-bounds entries) up to a fixed ``nse``. torch gets the same
in-bounds entries, in the same order, as a ``torch.sparse_coo_tensor``.

Tolerances: float32 bit for bit against torch with a correctly rounded sqrt patched in (see
``_reference.correctly_rounded_torch_sqrt``), with JAX's x64 off and on; bfloat16 and float16
bit for bit (50 steps, torch unpatched); float64 within
``1e-12 * max|torch|`` per leaf and step (the generic harness's bound: torch's MKL sqrt is 1 ULP
off on ~1% of float64 inputs, ``beta**t`` is libm ``pow`` there and binary exponentiation here).

Duplicates: torch sums them in the order of its ``sort`` of the flattened indices -- stable
for at most 16 entries and (radix sort) for at least 32,768, ``std::sort``'s unstable introsort
in between. We add them in the order they appear. So the trajectory rows hold each index at
most twice unless the entry count is in a stable range (then up to 6 or 400 times), and
``test_coalesce_summation_order`` pins the difference down exactly: for any count, ours is the
appearance-order sum and torch's the sum in its own ``sort`` order, both bit for bit.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from _reference import bitwise_equal, correctly_rounded_torch_sqrt
from jax.experimental import sparse

import jaxopt_lab as jol

torch = pytest.importorskip("torch")

STEPS = 200


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One parameter and how its sparse gradients are drawn."""

    shape: tuple[int, ...]
    layout: str  # "rows": sparse over dim 0, dense over the rest; "elements": sparse over all
    nnz: tuple[int, ...]  # the in-bounds entry counts a step draws from
    max_mult: int = 2  # at most this many entries per index
    nse: int | None = None  # pad with out-of-bounds entries up to this fixed nse

    @property
    def n_sparse(self) -> int:
        return 1 if self.layout == "rows" else len(self.shape)


@dataclasses.dataclass(frozen=True)
class SparseCase:
    desc: str
    kwargs: dict[str, Any]
    leaves: tuple[Leaf, ...]
    steps: int = STEPS
    cosine_lr: bool = False  # lr follows CosineAnnealingLR(T_max=40, eta_min=1e-5)


EMBED = Leaf((50, 8), "rows", tuple(range(20, 41)), nse=48)
VECTOR = Leaf((101,), "elements", tuple(range(10, 31)), nse=40)

SPARSE_CASES = [
    SparseCase("default", {}, (EMBED, VECTOR)),
    SparseCase("lr-betas-eps", {"lr": 3e-2, "betas": (0.5, 0.9), "eps": 1e-6}, (EMBED, VECTOR)),
    SparseCase("maximize", {"lr": 1e-2, "maximize": True}, (EMBED, VECTOR)),
    SparseCase(
        "elements-2d", {"lr": 1e-2}, (Leaf((37, 11), "elements", tuple(range(30, 61)), nse=64),)
    ),
    SparseCase(
        "few-entries-many-dups",  # <= 16 entries: torch's sort is stable, any multiplicity
        {"lr": 1e-2},
        (Leaf((6, 3), "rows", (4, 9, 16), 6, nse=20), Leaf((5,), "elements", (3, 16), 6, nse=20)),
    ),
    SparseCase(
        "unpadded-nse",
        {"lr": 1e-2},
        (Leaf((20, 4), "rows", (0, 7, 12)), Leaf((9,), "elements", (5,))),
    ),
    SparseCase("cosine-lr", {"lr": 5e-2}, (EMBED, VECTOR), cosine_lr=True),
    SparseCase(
        "radix-sorted-many-dups",  # >= 32,768 entries: torch's sort is stable again
        {"lr": 1e-2},
        (Leaf((300, 4), "rows", (32_768, 33_000), max_mult=400),),
        steps=4,
    ),
]


def _draw(leaf: Leaf, step: int, rng: np.random.Generator, dtype: Any):
    """(BCOO indices, BCOO values, in-bounds mask) for one leaf and step."""
    n_index = int(np.prod(leaf.shape[: leaf.n_sparse]))
    dense_shape = leaf.shape[leaf.n_sparse :]
    k = 0 if step % 17 == 16 else int(rng.choice(leaf.nnz))
    mult = rng.integers(1, leaf.max_mult + 1, size=n_index)  # each index at most max_mult
    while mult.sum() < k:
        j = rng.integers(n_index)
        mult[j] = min(leaf.max_mult, mult[j] + 1)
    flat = rng.permutation(np.repeat(rng.permutation(n_index), mult)[:k])
    idx = np.stack(np.unravel_index(flat, leaf.shape[: leaf.n_sparse]), axis=1)
    mag = 10.0 ** rng.uniform(-3, 3, size=(k, *dense_shape))
    sign = rng.choice([-1.0, 1.0], size=mag.shape)
    vals = np.where(rng.uniform(size=mag.shape) > 0.1, mag * sign, 0.0).astype(dtype)
    inside = np.ones(k, bool)
    if leaf.nse is not None:  # pad with out-of-bounds entries, shuffled among the real ones
        pad = leaf.nse - k
        bad = rng.integers(0, np.array(leaf.shape[: leaf.n_sparse]), size=(pad, leaf.n_sparse))
        axis = rng.integers(0, leaf.n_sparse, size=pad)
        bad[np.arange(pad), axis] = np.array(leaf.shape)[axis] + rng.integers(0, 3, size=pad)
        idx = np.concatenate([idx, bad])
        vals = np.concatenate([vals, rng.normal(size=(pad, *dense_shape)).astype(dtype)])
        inside = np.concatenate([inside, np.zeros(pad, bool)])
        order = rng.permutation(leaf.nse)
        idx, vals, inside = idx[order], vals[order], inside[order]
    return idx.astype(np.int32), vals, inside


def grad_stream(case: SparseCase, dtype: Any, seed: int = 3):
    rng = np.random.default_rng(seed)
    for step in range(case.steps):
        yield [_draw(leaf, step, rng, dtype) for leaf in case.leaves]


def init_params(case: SparseCase, dtype: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=leaf.shape).astype(dtype) for leaf in case.leaves]


def _to_torch(x: np.ndarray) -> Any:
    """NumPy -> torch, bit for bit (bfloat16 through float32, which holds it exactly)."""
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.astype(np.float32)).bfloat16()
    return torch.from_numpy(x)


def _to_numpy(t: Any) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy().copy()


def torch_trajectory(case: SparseCase, dtype: Any) -> list[dict[str, list[np.ndarray]]]:
    params = [_to_torch(p).requires_grad_() for p in init_params(case, dtype)]
    opt = torch.optim.SparseAdam(params, **case.kwargs)
    sched = None
    if case.cosine_lr:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=1e-5)
    out = []
    for grads in grad_stream(case, dtype):
        for p, (idx, vals, inside) in zip(params, grads, strict=True):
            p.grad = torch.sparse_coo_tensor(
                torch.from_numpy(idx[inside].T.astype(np.int64)),
                _to_torch(vals[inside]),
                p.shape,
                check_invariants=False,
            )
        opt.step()
        if sched is not None:
            sched.step()
        out.append(
            {
                "params": [_to_numpy(p) for p in params],
                **{k: [_to_numpy(opt.state[p][k]) for p in params] for k in _FIELDS},
            }
        )
    return out


_FIELDS = ("exp_avg", "exp_avg_sq")


def jax_trajectory(case: SparseCase, dtype: Any) -> list[dict[str, list[np.ndarray]]]:
    kwargs = dict(case.kwargs)
    if case.cosine_lr:
        kwargs["lr"] = jol.schedules.cosine_annealing_lr(kwargs["lr"], T_max=40, eta_min=1e-5)
    opt = jol.sparse_adam(**kwargs)
    params = [jnp.asarray(p) for p in init_params(case, dtype)]
    state = opt.init(params)
    update = jax.jit(opt.update, donate_argnums=(0, 2))
    out = []
    for grads in grad_stream(case, dtype):
        bcoo = [
            sparse.BCOO((jnp.asarray(vals), jnp.asarray(idx)), shape=leaf.shape)
            for leaf, (idx, vals, _) in zip(case.leaves, grads, strict=True)
        ]
        params, state = update(params, bcoo, state)
        out.append(
            {
                "params": [np.asarray(p) for p in params],
                **{k: [np.asarray(x) for x in getattr(state, k)] for k in _FIELDS},
            }
        )
    return out


_TORCH: dict = {}


def _torch(case: SparseCase, dtype: Any):
    key = (case.desc, np.dtype(dtype).name)
    if key not in _TORCH:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse invariant checks: off
            if dtype == np.float32:
                with correctly_rounded_torch_sqrt():
                    _TORCH[key] = torch_trajectory(case, dtype)
            else:
                _TORCH[key] = torch_trajectory(case, dtype)
    return _TORCH[key]


def _compare(ours, theirs, check) -> None:
    assert len(ours) == len(theirs)
    for step, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.keys() == ref.keys()
        for field in ref:
            for leaf, (a, b) in enumerate(zip(mine[field], ref[field], strict=True)):
                assert a.dtype == b.dtype and a.shape == b.shape, (field, leaf)
                check(a, b, f"step {step}, {field}[{leaf}]")


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@pytest.mark.parametrize("case", SPARSE_CASES, ids=lambda c: c.desc)
def test_float32_bitwise(case, x64):
    with jax.enable_x64(x64):
        ours = jax_trajectory(case, np.float32)

    def check(a, b, where):
        same = bitwise_equal(a, b)
        assert same.all(), f"{where}: {np.count_nonzero(~same)} of {same.size} elements differ"

    _compare(ours, _torch(case, np.float32), check)


@pytest.mark.slow
@pytest.mark.parametrize("case", SPARSE_CASES, ids=lambda c: c.desc)
def test_float64_trajectory(case):
    with jax.enable_x64(True):
        ours = jax_trajectory(case, np.float64)

    def check(a, b, where):
        scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(a - b), initial=0.0))
        assert err <= 1e-12 * scale, f"{where}: {err:.3e} > 1e-12 * {scale:.3e}"

    _compare(ours, _torch(case, np.float64), check)


LOW_PRECISION_STEPS = 50


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", SPARSE_CASES, ids=lambda c: c.desc)
def test_low_precision_bitwise(case, dtype):
    """bfloat16/float16 params and gradients, 50 steps: each op (and each duplicate sum)
    computes in float32 and rounds back. torch's sqrt is not patched: its float32 result is
    rounded to 8 or 11 bits, which hides MKL's 1-ulp float32 error unless it straddles a
    rounding boundary (not once here)."""
    case = dataclasses.replace(case, steps=min(case.steps, LOW_PRECISION_STEPS))
    with jax.enable_x64(False):
        ours = jax_trajectory(case, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs = torch_trajectory(case, dtype)

    def check(a, b, where):
        same = bitwise_equal(a, b)
        assert same.all(), f"{where}: {np.count_nonzero(~same)} of {same.size} elements differ"

    _compare(ours, theirs, check)


def test_untouched_entries_stay_bitwise_unchanged():
    """Entries no gradient holds keep params and moments exactly (unlike dense Adam)."""
    case = SPARSE_CASES[0]
    with jax.enable_x64(False):
        ours = jax_trajectory(case, np.float32)
    touched = [np.zeros(leaf.shape, bool) for leaf in case.leaves]
    prev = [np.asarray(p) for p in init_params(case, np.float32)]
    for record, grads in zip(ours, grad_stream(case, np.float32), strict=True):
        for i, (leaf, (idx, _, inside)) in enumerate(zip(case.leaves, grads, strict=True)):
            hit = np.zeros(leaf.shape[: leaf.n_sparse], bool)
            hit[tuple(idx[inside].T)] = True
            hit = np.broadcast_to(
                hit.reshape(hit.shape + (1,) * len(leaf.shape[hit.ndim :])), leaf.shape
            )
            assert bitwise_equal(record["params"][i][~hit], prev[i][~hit]).all()
            touched[i] |= hit
            prev[i] = record["params"][i]
        for i in range(len(case.leaves)):  # moments stay zero where nothing ever arrived
            assert not record["exp_avg_sq"][i][~touched[i]].any()


def _coalesce_case(nnz: int, n_index: int, seed: int):
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, n_index, size=nnz)
    vals = (rng.normal(size=nnz) * 10.0 ** rng.uniform(-4, 4, nnz)).astype(np.float32)
    return flat, vals


def _ordered_sum(flat: np.ndarray, vals: np.ndarray, order: np.ndarray) -> dict[int, np.float32]:
    out: dict[int, np.float32] = {}
    for j in order:
        k = int(flat[j])
        out[k] = np.float32(out[k] + vals[j]) if k in out else vals[j]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("nnz", [16, 17, 200, 5_000, 32_767, 32_768, 40_000])
def test_coalesce_summation_order(nnz):
    """Duplicates (here ~4 per index): ours are summed in the order they appear, torch's in the
    order of ``torch.sort`` of the flat indices -- the order its ``coalesce`` uses. Both are
    checked bit for bit against a NumPy loop in that order, and they agree with each other
    exactly where torch's sort is stable (<= 16 or >= 32,768 entries)."""
    flat, vals = _coalesce_case(nnz, max(1, nnz // 4), seed=nnz)
    g = sparse.BCOO((jnp.asarray(vals), jnp.asarray(flat[:, None], jnp.int32)), shape=(nnz,))
    with jax.enable_x64(False):
        rows, summed, first, _ = jax.jit(jol._sparse_adam.coalesce)(g)
    rows, summed, first = np.asarray(rows), np.asarray(summed)[:, 0], np.asarray(first)
    ours = dict(zip(rows[first].tolist(), summed[first], strict=True))
    mine = _ordered_sum(flat, vals, np.argsort(flat, kind="stable"))
    assert sorted(ours) == sorted(mine)
    assert all(bitwise_equal(ours[k], mine[k]) for k in mine)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_coo_tensor(torch.from_numpy(flat[None]), torch.from_numpy(vals), (nnz,))
        t = t.coalesce()
    torch_order = torch.from_numpy(flat).sort(0).indices.numpy()  # coalesce's own sort
    theirs = dict(zip(t.indices()[0].tolist(), t.values().numpy(), strict=True))
    expected = _ordered_sum(flat, vals, torch_order)
    assert all(bitwise_equal(theirs[k], expected[k]) for k in expected)
    if nnz <= 16 or nnz >= 32_768:
        assert all(bitwise_equal(theirs[k], ours[k]) for k in ours)


def _bcoo(data, idx, shape) -> sparse.BCOO:
    return sparse.BCOO((jnp.asarray(data), jnp.asarray(idx, jnp.int32)), shape=shape)


@pytest.mark.parametrize(
    ("grads", "error", "match"),
    [
        (
            lambda: [_bcoo(np.ones(2, np.float32), [[0], [1]], (4,))],
            ValueError,
            r"has shape \(4,\)",
        ),
        (
            lambda: [_bcoo(np.ones(2, np.float64), [[0], [1]], (3,))],
            TypeError,
            r"grads leaf \[0\] has dtype float64, params leaf has float32",
        ),
        (lambda: [jnp.ones(3, jnp.float32)], RuntimeError, "does not support dense gradients"),
        (lambda: {"a": _bcoo(np.ones(1, np.float32), [[0]], (3,))}, ValueError, "tree structure"),
    ],
    ids=["shape", "dtype", "dense", "structure"],
)
def test_bad_grads_raise(grads, error, match):
    opt = jol.sparse_adam()
    params = [jnp.zeros(3, jnp.float32)]
    with jax.enable_x64(True), pytest.raises(error, match=match):
        opt.update(params, grads(), opt.init(params))


def test_batched_bcoo_layout_is_accepted():
    """A BCOO with batch dimensions is the same gradient as its unbatched layout."""
    rng = np.random.default_rng(0)
    dense = np.where(rng.uniform(size=(4, 6)) > 0.6, rng.normal(size=(4, 6)), 0.0)
    dense = dense.astype(np.float32)
    params = jnp.asarray(rng.normal(size=(4, 6)).astype(np.float32))
    opt = jol.sparse_adam(lr=0.1)
    with jax.enable_x64(False):
        batched = sparse.BCOO.fromdense(jnp.asarray(dense), n_batch=1)
        flat = sparse.BCOO.fromdense(jnp.asarray(dense))
        a, sa = opt.update(params, batched, opt.init(params))
        b, sb = opt.update(params, flat, opt.init(params))
    assert bitwise_equal(np.asarray(a), np.asarray(b)).all()
    assert bitwise_equal(np.asarray(sa.exp_avg), np.asarray(sb.exp_avg)).all()
