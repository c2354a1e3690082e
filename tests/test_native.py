"""The compiled CPU class-gap kernel (jamem/classifier/class_gaps.cc) against the XLA form it replaces."""

import concurrent.futures
import os
import subprocess
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jamem import DenseAMClassifier
from jamem.classifier import model as model_module
from jamem.classifier import native

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not native.native_kernels_enabled(),
    reason="the CPU class-gap kernel is not built on this machine (no C++ compiler or not a CPU backend)",
)


@pytest.fixture
def use_kernel():
    """Calls `fn` traced afresh with the kernel on and with XLA's fusion, restoring the setting."""

    def both(fn, *args):
        results = []
        for enabled in (True, False):
            native.set_native_kernels(enabled)
            compiled = jax.jit(lambda *a: fn(*a))  # a new lambda: traced again
            # the comparison means something only if the kernel ran on one side and not the other
            assert ("jamem_class_gaps" in compiled.lower(*args).as_text()) == enabled
            results.append(compiled(*args))
        return results

    yield both
    native.set_native_kernels(True)


def _inputs(batch, num_classes, num_memories, key=0, scale=1.0):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    base = scale * (jax.random.normal(k1, (batch, num_memories)) - 0.2)
    shift = 0.3 * scale * jax.random.normal(k2, (num_classes, num_memories))
    cotangent = jax.random.normal(k3, (batch, num_classes))
    return base, shift, cotangent


def _close(got, want, rtol):
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) <= rtol * scale, (got, want)


# odd class counts and memory counts off the 16-lane blocks exercise the kernel's tails; 45 images
# are three row chunks on the thread pool; 300 memories are several column chunks of the backward
# (five on two threads) and three tiles of the forward, with a tail of 12
@pytest.mark.parametrize(
    ("batch", "num_classes", "num_memories"), [(1, 1, 5), (45, 3, 37), (17, 10, 64), (40, 10, 300)]
)
@pytest.mark.parametrize("degree", [1, 2, 3, 30])
def test_gaps_and_gradient_match_xla(use_kernel, degree, batch, num_classes, num_memories):
    base, shift, cotangent = _inputs(batch, num_classes, num_memories, key=degree)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, degree), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    for got, want in zip(kernel, xla):
        _close(got, want, rtol=2e-5)


def test_gradient_matches_float64_closed_form(use_kernel):
    """d/dbase and d/dshift of sum_bc g_bc gaps_bc, written out in float64 NumPy."""
    degree = 3
    base, shift, cotangent = _inputs(9, 4, 21, key=7)
    weighted_sum = lambda b, s: jnp.sum(cotangent * model_module.rectified_power_gaps(b, s, degree))
    kernel, _ = use_kernel(lambda b, s: jax.grad(weighted_sum, (0, 1))(b, s), base, shift)
    b, s, g = (np.asarray(a, np.float64) for a in (base, shift, cotangent))
    f = lambda x: degree * np.maximum(x, 0) ** (degree - 1)
    on = f(b[:, None, :] + s[None])  # (B, C, K)
    d_base = np.einsum("bc,bck->bk", g, on) - g.sum(1)[:, None] * f(b)
    d_shift = np.einsum("bc,bck->ck", g, on)
    np.testing.assert_allclose(kernel[0], d_base, rtol=1e-5, atol=1e-5 * np.abs(d_base).max())
    np.testing.assert_allclose(kernel[1], d_shift, rtol=1e-5, atol=1e-5 * np.abs(d_shift).max())


def test_classifier_training_gradient_matches_xla(use_kernel):
    """The whole model: scores and the memories' gradient of the power loss, as training takes it."""
    model = DenseAMClassifier(num_memories=40, num_visible=30, num_classes=10, degree=3, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (20, 30), minval=-1, maxval=1)
    labels = jnp.arange(20) % 10

    def loss(m):
        out = jnp.tanh(m.batch_scores(images, temperature=2.0))
        return jnp.sum((out - (2 * jax.nn.one_hot(labels, 10) - 1)) ** 6)

    kernel, xla = use_kernel(lambda m: jax.grad(loss)(m).memories, model)
    _close(kernel, xla, rtol=1e-5)


def test_vmap_equals_loop_and_jit_equals_eager():
    model = DenseAMClassifier(num_memories=33, num_visible=12, num_classes=5, degree=4, key=jax.random.key(2))
    images = jax.random.uniform(jax.random.key(3), (6, 12), minval=-1, maxval=1)
    score = lambda x: model.scores(x, temperature=1.5)
    batched = jax.vmap(score)(images)
    looped = jnp.stack([score(x) for x in images])
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(score)(images[0]), looped[0], rtol=1e-6, atol=1e-6)
    grads = jax.vmap(jax.grad(lambda x: jnp.sum(score(x))))(images)
    np.testing.assert_allclose(grads[2], jax.grad(lambda x: jnp.sum(score(x)))(images[2]), rtol=1e-5, atol=1e-6)


def test_vmap_over_images_folds_into_one_kernel_call(use_kernel):
    """vmap over images (as the attacks do) gives the kernel every row in one call, and the shared
    memories' gradient stays one per image; vmap over models and nested vmaps agree with XLA too."""
    key = jax.random.key(5)
    make = lambda k: DenseAMClassifier(num_memories=33, num_visible=12, num_classes=5, degree=4, key=k)  # noqa: E731
    model, models = make(key), jax.vmap(make)(jax.random.split(key, 3))
    images = jax.random.uniform(jax.random.key(6), (6, 12), minval=-1, maxval=1)

    def param_grad(m, x):  # temperature 5 keeps tanh unsaturated, so the gradients are not all 0
        return jax.grad(lambda m: jnp.sum(jnp.tanh(m.scores(x, temperature=5.0)) ** 3))(m).memories

    def input_grad(x):
        return jax.grad(lambda x: jnp.sum(model.scores(x, temperature=5.0) ** 2))(x)

    def everything(images, models):
        return (
            jax.vmap(lambda x: model.scores(x, temperature=5.0))(images),
            jax.vmap(lambda x: param_grad(model, x))(images),
            jax.vmap(jax.vmap(input_grad))(images.reshape(2, 3, 12)),
            jax.vmap(lambda x: model.batch_scores(x, temperature=5.0))(images.reshape(2, 3, 12)),
            jax.vmap(lambda m: jax.vmap(lambda x: m.scores(x, temperature=5.0))(images))(models),
            jax.vmap(lambda m: param_grad(m, images[0]))(models),
        )

    kernel, xla = use_kernel(everything, images, models)
    for got, want in zip(kernel, xla):
        _close(got, want, rtol=1e-5)
    _close(kernel[1], jnp.stack([param_grad(model, x) for x in images]), rtol=1e-5)
    assert float(jnp.max(jnp.abs(kernel[1]))) > 0.1  # a per-image gradient that is not trivially 0

    # one forward call over all six rows, no loop over the images
    native.set_native_kernels(True)
    lowered = jax.jit(jax.vmap(lambda x: model.scores(x, temperature=5.0))).lower(images).as_text()
    calls = [line for line in lowered.splitlines() if "jamem_class_gaps_forward" in line]
    assert len(calls) == 1 and "6x33xf32" in calls[0], calls
    assert "while" not in lowered
    # and an attack's per-image input gradient: one forward and one backward call, and the memories'
    # per-image gradient, which nothing uses, compiled away (no loop left)
    input_grads = jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(model.scores(x, temperature=5.0) ** 2))))
    compiled = input_grads.lower(images).compile().as_text()
    targets = [
        line.split("custom_call_target=")[1].split(",")[0] for line in compiled.splitlines() if "custom-call(" in line
    ]
    assert sorted(targets) == ['"jamem_class_gaps_backward"', '"jamem_class_gaps_forward"'], targets
    assert "while" not in compiled


def test_export_needs_the_kernel_off_and_then_gives_the_same_scores():
    model = DenseAMClassifier(num_memories=33, num_visible=12, num_classes=5, degree=3, key=jax.random.key(7))
    images = jax.random.uniform(jax.random.key(8), (4, 12), minval=-1, maxval=1)
    scores = jax.jit(lambda x: model.batch_scores(x, temperature=5.0))
    with_kernel = scores(images)
    with pytest.raises(ValueError, match="jamem_class_gaps_forward"):
        jax.export.export(scores)(images)
    native.set_native_kernels(False)
    try:
        exported = jax.export.deserialize(jax.export.export(scores)(images).serialize())
    finally:
        native.set_native_kernels(True)
    _close(exported.call(images), with_kernel, rtol=1e-5)


@pytest.mark.parametrize("degree", [1, 3])
def test_nan_and_infinity_propagate_as_in_xla(use_kernel, degree):
    base, shift, cotangent = _inputs(4, 3, 20)
    base = base.at[1, 7].set(jnp.nan).at[2, 3].set(jnp.inf)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, degree), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    for got, want in zip(kernel, xla):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert bool(jnp.all(jnp.isnan(kernel[0][1]))) and bool(jnp.all(jnp.isfinite(kernel[0][jnp.array([0, 3])])))


def test_gradient_of_the_gradient_matches_xla(use_kernel):
    """The compiled backward is differentiated through the XLA form of the same backward."""
    base, shift, _ = _inputs(6, 3, 20, key=3)

    def penalty(b, s):
        d_base = jax.grad(lambda b: jnp.sum(jnp.tanh(0.1 * model_module.rectified_power_gaps(b, s, 3))))(b)
        return jnp.sum(d_base**2)

    kernel, xla = use_kernel(lambda b, s: jax.grad(penalty, (0, 1))(b, s), base, shift)
    for got, want in zip(kernel, xla):
        _close(got, want, rtol=1e-5)


def test_only_an_integer_degree_takes_the_kernel():
    # the kernel reads the degree as an int64: 2.5 (rejected by the annotation under type checks,
    # not otherwise) must keep the XLA form rather than be truncated to 2
    base, shift, _ = _inputs(5, 3, 20)
    assert model_module._use_native_kernel(base, shift, 3) and model_module._use_native_kernel(base, shift, np.int64(3))
    for degree in (2.5, 0, True):
        assert not model_module._use_native_kernel(base, shift, degree)
    assert not model_module._use_native_kernel(base.astype(jnp.float16), shift, 3)


def test_empty_batch(use_kernel):
    base, shift, cotangent = _inputs(0, 3, 20)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, 3), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    assert kernel[0].shape == (0, 3)
    np.testing.assert_array_equal(kernel[2], np.zeros((3, 20)))


def test_without_a_compiler_it_warns_once_and_uses_xla(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("JAMEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(native._state, "loaded", None)
    with pytest.warns(RuntimeWarning, match="could not build its CPU class-gap kernel"):
        assert not native.native_kernels_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not native.native_kernels_enabled()  # decided once per process
        base, shift, _ = _inputs(5, 3, 20)
        gaps = jax.jit(lambda b, s: model_module.rectified_power_gaps(b, s, 2))(base, shift)
    want = jnp.sum(jax.nn.relu(base[:, None] + shift[None]) ** 2 - jax.nn.relu(base)[:, None] ** 2, axis=-1)
    _close(gaps, want, rtol=1e-6)


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """A stand-in for the C++ compiler that logs its calls, runs a child process for a second (as a
    driver runs the compiler proper), and writes an empty `-o` file."""
    log, child = tmp_path / "calls.log", tmp_path / "child.pid"
    script = tmp_path / "fake-cxx"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--version*) echo fake-cxx 1.0; exit 0;; esac\n'
        f'echo "$*" >> "{log}"\n'
        f'sleep 1 & echo $! > "{child}"; wait\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then : > "$2"; fi; shift; done\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("JAMEM_CACHE_DIR", str(tmp_path / "cache"))
    return script, log, child


def test_concurrent_builds_compile_once_and_cxx_may_carry_arguments(fake_compiler):
    script, log, _ = fake_compiler
    compiler = [str(script), "--wrapped-by-test"]  # as CXX="ccache g++" would give
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        libraries = list(pool.map(lambda _: native._build(compiler), range(3)))
    assert len(set(libraries)) == 1 and libraries[0].is_file()
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("--wrapped-by-test -O3"), calls


def test_cxx_is_a_path_with_spaces_or_a_command_with_arguments(fake_compiler, monkeypatch):
    script, _, _ = fake_compiler
    spaced = script.parent / "my tools" / "fake-cxx"
    spaced.parent.mkdir()
    spaced.write_bytes(script.read_bytes())
    spaced.chmod(0o755)
    monkeypatch.setenv("CXX", str(spaced))
    assert native._compiler_command() == [str(spaced)]
    monkeypatch.setenv("CXX", f"{script} --wrapped")
    assert native._compiler_command() == [str(script), "--wrapped"]
    monkeypatch.setenv("CXX", " ")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        native._compiler_command()


def _running(pid: int) -> bool:
    try:
        state = [line for line in open(f"/proc/{pid}/status") if line.startswith("State:")]
    except OSError:
        return False
    return not state or "Z" not in state[0].split()[1]  # a zombie has finished


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see that the compiler's child was killed")
def test_a_hung_compiler_times_out_once_for_all_waiters_and_leaves_nothing_running(fake_compiler, monkeypatch):
    script, log, child = fake_compiler
    monkeypatch.setattr(native, "_BUILD_TIMEOUT_S", 0.3)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: _raised(native._build, [str(script)]), range(3)))
    assert sum(isinstance(e, subprocess.TimeoutExpired) for e in outcomes) == 1, outcomes
    assert sum("just failed" in str(e) for e in outcomes) == 2, outcomes
    assert len(log.read_text().splitlines()) == 1  # the waiters did not start the compiler again
    assert not _running(int(child.read_text()))  # the driver's child went with it

    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setitem(native._state, "loaded", None)
    with pytest.warns(RuntimeWarning, match="timed out"):  # a later process tries again, and says why
        assert not native.native_kernels_enabled()


def test_a_paused_build_lock_holder_makes_waiters_fall_back_to_xla(fake_compiler, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    script, log, _ = fake_compiler
    monkeypatch.setattr(native, "_BUILD_TIMEOUT_S", 0.2)
    monkeypatch.setattr(native, "_LOCK_GRACE_S", 0.3)
    cache = native.default_cache_dir()
    cache.mkdir(parents=True)
    holder = os.open(cache / ".class_gaps.lock", os.O_RDONLY | os.O_CREAT)  # as a SIGSTOPped builder holds it
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="paused or hung"):
            native._build([str(script)])
        assert 0.5 <= time.monotonic() - started < 5
        monkeypatch.setenv("CXX", str(script))
        monkeypatch.setitem(native._state, "loaded", None)
        with pytest.warns(RuntimeWarning, match="held the lock"):
            assert not native.native_kernels_enabled()
    finally:
        os.close(holder)
    assert not log.exists()  # nothing was compiled while the lock was held
    monkeypatch.setattr(native, "_BUILD_TIMEOUT_S", 30.0)  # the fake compiler takes a second
    assert native._build([str(script)]).is_file()  # and once the lock is free, the build goes ahead


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as error:  # noqa: BLE001 - the test looks at which
        return error
    return None
