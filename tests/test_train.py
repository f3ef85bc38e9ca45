"""The jitted train/eval steps, the epoch loop and the data-parallel path (8 host CPU devices)."""

from __future__ import annotations

import re
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_lab as jol
from jaxopt_lab.cifar import train
from jaxopt_lab.cifar.crosscheck import rel_param_distance
from jaxopt_lab.cifar.data import batches, synthetic_cifar10
from jaxopt_lab.cifar.models import CifarCNN
from jaxopt_lab.losses import cross_entropy


class TinyNet(nn.Module):
    """A linear classifier: compiles in a fraction of a second, for the loop mechanics."""

    @nn.compact
    def __call__(self, images_NHWC: jax.Array) -> jax.Array:
        return nn.Dense(10)(images_NHWC.reshape(images_NHWC.shape[0], -1))


def _init(model: nn.Module, dtype: type) -> dict:
    """Host (NumPy) params of ``dtype``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch's init.

    Shapes come from ``jax.eval_shape`` and values from NumPy: ``model.init`` would compile
    jax.random's threefry for every kernel (~10 s of CPU here). Every state built from these
    host arrays owns fresh device buffers.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))[
        "params"
    ]
    rng = np.random.default_rng(0)
    params = {}
    for layer, leaves in shapes.items():
        bound = 1 / np.sqrt(np.prod(leaves["kernel"].shape[:-1]))
        params[layer] = {
            k: rng.uniform(-bound, bound, v.shape).astype(dtype) for k, v in leaves.items()
        }
    return params


def _state(model: nn.Module, params_np: dict, tx: jol.Optimizer) -> train.TrainState:
    params = jax.tree.map(jnp.array, params_np)
    return train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@pytest.fixture(scope="module")
def data() -> object:
    return synthetic_cifar10(40, seed=1)


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyNet, dict, jol.Optimizer]:
    # One optimizer object for the module: the step compiles once and later tests hit the cache.
    return TinyNet(), _init(TinyNet(), np.float32), jol.sgd(lr=0.05, momentum=0.9)


def test_cnn_train_step_jits_once_and_lowers_the_loss(data: object) -> None:
    model = CifarCNN()
    state = _state(model, _init(model, np.float32), jol.sgd(lr=0.05))
    images, labels = next(batches(data, batch_size=8))
    before = train.train_step._cache_size()
    losses = []
    for _ in range(6):
        state, metrics = train.train_step(state, (images, labels))
        losses.append(float(metrics["loss"]))
    assert train.train_step._cache_size() == before + 1  # compiled once, then cache hits
    assert int(state.step) == 6
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert losses[-1] < losses[0] - 0.1, losses
    assert 0 <= int(metrics["correct"]) <= 8


def test_train_step_donates_the_old_state(tiny: tuple, data: object) -> None:
    model, params_np, tx = tiny
    old = _state(model, params_np, tx)
    new, _ = train.train_step(old, next(batches(data, batch_size=8)))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old.params))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new.params))


def test_create_unaliases_state_buffers(data: object) -> None:
    """An init that returns one buffer twice (or params themselves) must still be donatable."""
    sgd = jol.sgd(lr=0.1)

    def init(params: dict) -> tuple:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (sgd.init(params), zeros, zeros, params)

    def update(params: dict, grads: dict, state: tuple) -> tuple:
        new, inner = sgd.update(params, grads, state[0])
        return new, (inner, *state[1:3], new)

    model = TinyNet()
    state = _state(model, _init(model, np.float32), jol.Optimizer(init, update))
    state, metrics = train.train_step(state, next(batches(data, batch_size=8)))
    assert np.isfinite(float(metrics["loss"]))


def test_eval_step_counts_every_example_once(tiny: tuple, data: object) -> None:
    model, params_np, tx = tiny
    state = _state(model, params_np, tx)
    result = train.evaluate(state, data, batch_size=16)  # 40 = 16 + 16 + 8 padded rows
    images, labels = next(batches(data, batch_size=40))
    logits = model.apply({"params": state.params}, images)
    expected_acc = float(np.mean(np.argmax(np.asarray(logits), -1) == labels))
    expected_loss = float(cross_entropy(logits, labels))
    assert result["accuracy"] == pytest.approx(expected_acc, abs=0)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_fit_prints_the_running_loss_sum(
    tiny: tuple, data: object, capsys: pytest.CaptureFixture[str]
) -> None:
    model, params_np, tx = tiny
    state, history = train.fit(
        _state(model, params_np, tx), data, epochs=2, batch_size=8, eval_ds=data, progress=False
    )
    out = capsys.readouterr().out
    assert [h.epoch for h in history] == [1, 2]
    assert all(h.steps == 5 and len(h.losses) == 5 for h in history)  # 40 // 8
    assert int(state.step) == 10
    for h in history:
        assert h.running_loss == pytest.approx(sum(h.losses), rel=1e-12)
        assert 0.0 <= h.accuracy <= 1.0
    lines = re.findall(r"\[epoch (\d)\] running loss: ([\d.]+)  accuracy: ([\d.]+) %", out)
    assert [int(e) for e, _, _ in lines] == [1, 2]
    assert float(lines[0][1]) == pytest.approx(history[0].running_loss, abs=1e-3)

    _, capped = train.fit(
        _state(model, params_np, tx),
        data,
        epochs=3,
        batch_size=8,
        max_steps=7,
        print_fn=None,
        progress=False,
    )
    assert [h.steps for h in capped] == [5, 2]


def test_scan_epoch_equals_the_python_loop(tiny: tuple, data: object) -> None:
    """``scan=True`` (the GPU/TPU option) computes exactly the loop's steps."""
    model, params_np, tx = tiny
    kwargs = dict(epochs=1, batch_size=8, print_fn=None, progress=False)
    loop, h_loop = train.fit(_state(model, params_np, tx), data, **kwargs)
    scan, h_scan = train.fit(_state(model, params_np, tx), data, scan=True, **kwargs)
    np.testing.assert_allclose(h_scan[0].losses, h_loop[0].losses, rtol=1e-6)
    assert rel_param_distance(jax.device_get(scan.params), jax.device_get(loop.params)) < 1e-6


def test_shard_batch_needs_a_divisible_batch() -> None:
    mesh = train.data_mesh()
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        train.shard_batch((np.zeros((12, 2)),), mesh)


def test_data_parallel_step_equals_the_single_device_step(data: object) -> None:
    """The same jitted step on 8 devices (batch sharded, state replicated) = one device.

    Only the summation order differs: the batch reductions (mean loss, and every weight
    gradient, e.g. conv1's kernel sums B*32*32 = 16,384 products per entry) are split into 8
    per-device partial sums plus an all-reduce. Reassociating a sum of n terms changes it by at
    most (n-1)*u*sum|x_i| (u = 2**-53 in float64), so k steps move the params by at most about
    k * n * u relative: 3 * 16384 * 1.1e-16 = 5.5e-12. Measured: ~4e-16.
    """
    assert jax.device_count() == 8, "conftest sets --xla_force_host_platform_device_count=8"
    model, batch_size, steps = CifarCNN(), 16, 3
    params_np = _init(model, np.float64)
    tx = jol.sgd(lr=0.05, momentum=0.9)
    mesh = train.data_mesh()
    single = _state(model, params_np, tx)
    multi = train.replicate(_state(model, params_np, tx), mesh)
    for images, labels in list(batches(data, batch_size=batch_size, dtype=np.float64))[:steps]:
        single, m1 = train.train_step(single, (images, labels))
        sharded = train.shard_batch((images, labels), mesh)
        assert sharded[0].sharding.spec == jax.sharding.PartitionSpec("data")
        assert len(sharded[0].addressable_shards) == 8
        multi, m8 = train.train_step(multi, sharded)
        assert float(m8["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-13)
    tolerance = steps * batch_size * 32 * 32 * np.finfo(np.float64).eps / 2
    for leaf in jax.tree.leaves(multi.params):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    distance = rel_param_distance(jax.device_get(multi.params), jax.device_get(single.params))
    assert distance <= tolerance, (distance, tolerance)


def test_fit_runs_data_parallel(tiny: tuple, data: object) -> None:
    """``fit(mesh=...)``: sharded batches, replicated state, padded eval; same numbers as 1 device.

    float32 TinyNet, 5 steps: the reassociated batch sums (8 rows) move the result by a few ulps
    (measured ~1e-7 relative); 1e-5 leaves room.
    """
    model, params_np, tx = tiny
    kwargs = dict(epochs=1, batch_size=8, eval_ds=data, print_fn=None, progress=False)
    one, h_one = train.fit(_state(model, params_np, tx), data, **kwargs)
    many, h_many = train.fit(_state(model, params_np, tx), data, mesh=train.data_mesh(), **kwargs)
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(many.params))
    np.testing.assert_allclose(h_many[0].losses, h_one[0].losses, rtol=1e-5)
    assert h_many[0].accuracy == h_one[0].accuracy
    assert rel_param_distance(jax.device_get(many.params), jax.device_get(one.params)) < 1e-5


# ----------------------------------------------------------------------------------------------
# fit(checkpointer=...): interrupt after k steps, resume, finish == never interrupted
# ----------------------------------------------------------------------------------------------


class Resume(NamedTuple):
    """One interrupted run: stop after ``stops`` (cumulative max_steps), then run to the end."""

    id: str
    stops: tuple[int, ...]
    checkpoint_every: int = 0
    shuffle: bool = False
    epochs: int = 3  # 5 steps per epoch (40 examples, batch 8): 15 steps in all


RESUMES = [
    Resume("mid-epoch", (3,)),
    Resume("at-epoch-end", (5,)),
    Resume("twice-shuffled", (2, 9), shuffle=True),
    Resume("every-2-steps", (7,), checkpoint_every=2),
    Resume("finished-then-extended", (15,), epochs=4),
]


@pytest.mark.parametrize("case", RESUMES, ids=lambda c: c.id)
def test_resumed_fit_is_bitwise_the_uninterrupted_run(
    tiny: tuple, data: object, tmp_path: object, case: Resume
) -> None:
    model, params_np, tx = tiny
    kwargs = dict(
        batch_size=8, eval_ds=data, shuffle=case.shuffle, seed=3, print_fn=None, progress=False
    )
    reference, ref_history = train.fit(
        _state(model, params_np, tx), data, epochs=case.epochs, **kwargs
    )

    ckpt = jol.Checkpointer(tmp_path, max_to_keep=2)
    for stop in case.stops:  # each call is a fresh process's view: a new state, the same directory
        train.fit(
            _state(model, params_np, tx),
            data,
            epochs=case.epochs,
            max_steps=stop,
            checkpointer=ckpt,
            checkpoint_every=case.checkpoint_every,
            **kwargs,
        )
        assert ckpt.latest_step() == stop
    resumed, history = train.fit(
        _state(model, params_np, tx), data, epochs=case.epochs, checkpointer=ckpt, **kwargs
    )

    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)
    assert [h.steps for h in history] == [h.steps for h in ref_history]
    assert [h.losses for h in history] == [h.losses for h in ref_history]  # bit for bit
    assert [h.accuracy for h in history] == [h.accuracy for h in ref_history]
    assert ckpt.latest_step() == 5 * case.epochs


def test_fit_refuses_a_checkpoint_of_another_run(
    tiny: tuple, data: object, tmp_path: object
) -> None:
    model, params_np, tx = tiny
    kwargs = dict(epochs=1, print_fn=None, progress=False, checkpointer=jol.Checkpointer(tmp_path))
    train.fit(_state(model, params_np, tx), data, batch_size=8, **kwargs)
    with pytest.raises(ValueError, match=r"batch_size: checkpoint has 8, expected 4"):
        train.fit(_state(model, params_np, tx), data, batch_size=4, **kwargs)
    with pytest.raises(ValueError, match=r"checkpoint_every must be >= 0"):
        train.fit(_state(model, params_np, tx), data, checkpoint_every=-1, **kwargs)


def test_cpu_steps_compile_without_ynnpack_convolutions(data: object) -> None:
    """The shipped step carries :data:`train.CPU_OPTIONS` (bench_train: 2.4x faster on CPU).

    Checked on the compiled HLO: a plain ``jax.jit`` of the same step hands the convolutions to
    ``__ynn_fusion`` kernels on this jaxlib; ``train.train_step`` must have none.
    """
    assert train.compiler_options("gpu") == {} and train.compiler_options("tpu") == {}
    if jax.default_backend() != "cpu" or not train.compiler_options("cpu"):
        pytest.skip("the option applies to XLA:CPU jaxlibs that know it")
    model = CifarCNN()
    state = _state(model, _init(model, np.float32), jol.sgd(lr=0.05))
    batch = next(batches(data, batch_size=8))
    plain = jax.jit(train._train_step).lower(state, batch).compile().as_text()
    shipped = train.train_step.lower(state, batch).compile().as_text()
    if '"__ynn_fusion"' not in plain:
        pytest.skip("this jaxlib's default pipeline has no YNNPACK fusions to turn off")
    assert '"__ynn_fusion"' not in shipped
