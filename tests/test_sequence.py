"""Sequence memory (arXiv:2306.04532) on the engine: the update against integer arithmetic, recall
of a stored cycle, the transition error rate against its Gaussian theory, engine and input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem.core.capacity import flip_bits, random_patterns
from jamem.core.separation import signed_sums_sign
from jamem.networks import sequence


def literal_step(patterns, state, degree, *, cyclic=True):
    """The update with Python integers: x_i <- Sign(sum_mu xi_i^(mu+1) (xi^mu . x)^n), a tie keeping x_i."""
    keys = patterns if cyclic else patterns[:-1]
    successors = np.roll(patterns, -1, axis=0) if cyclic else patterns[1:]
    z = [int(v) for v in keys.astype(int) @ state.astype(int)]
    field = [sum(int(successors[m, i]) * z[m] ** degree for m in range(len(z))) for i in range(state.shape[0])]
    return np.array([1 if h > 0 else -1 if h < 0 else state[i] for i, h in enumerate(field)], np.float32)


@pytest.mark.parametrize("degree", [1, 2, 3, 7, 30])
@pytest.mark.parametrize("cyclic", [True, False])
def test_update_is_the_literal_rule(degree, cyclic):
    rng = np.random.default_rng(degree)
    memory = sequence.SequenceMemory(jm.Power(degree), cyclic=cyclic)
    step = jax.jit(memory.next_state)
    for count, dim in [(2, 3), (7, 13)] * 10:  # two shapes: two compilations
        patterns = rng.choice([-1.0, 1.0], size=(count, dim)).astype(np.float32)
        state = rng.choice([-1.0, 1.0], size=dim).astype(np.float32)
        np.testing.assert_array_equal(step(state, patterns), literal_step(patterns, state, degree, cyclic=cyclic))


def test_exact_ties_and_the_terms_below_them():
    # the two largest terms (overlap 4) cancel at bit 0; the overlap-2 term decides, 2^30 times smaller
    patterns = np.array([[1, 1, 1, 1], [1, 1, -1, -1], [-1, 1, 1, 1], [1, -1, -1, -1]], np.float32)
    keys = jnp.asarray(patterns)
    state = jnp.array([1.0, 1.0, 1.0, 1.0])
    z = keys @ state
    signs = jnp.asarray(np.roll(patterns, -1, axis=0))
    exact = literal_step(patterns, np.asarray(state), 30)
    got = jnp.where(signed_sums_sign(jm.Power(30), z, signs) > 0, 1.0, -1.0)
    field = [sum(int(signs[m, i]) * int(z[m]) ** 30 for m in range(4)) for i in range(4)]
    assert all(h != 0 for h in field)
    np.testing.assert_array_equal(got, exact)


def test_recall_walks_the_stored_cycle_from_a_noisy_cue(key):
    patterns = random_patterns(key, num_patterns=30, dim=100)
    memory = sequence.SequenceMemory(jm.Power(3))
    cue = flip_bits(jax.random.key(1), patterns[5], fraction=0.15)
    states = sequence.recall(memory, cue, patterns, steps=40)
    expected = jnp.roll(patterns, -6, axis=0)
    np.testing.assert_array_equal(states[:30], expected)
    np.testing.assert_array_equal(states[30:], expected[:10])  # round the cycle again
    assert bool(sequence.cycle_recalled(memory, patterns))


def test_a_dead_end_sequence_does_not_wrap_around(key):
    patterns = random_patterns(key, num_patterns=6, dim=64)
    memory = sequence.SequenceMemory(jm.Power(2), cyclic=False)
    states = sequence.recall(memory, patterns[0], patterns, steps=5)
    np.testing.assert_array_equal(states, patterns[1:])
    with pytest.raises(ValueError, match="cyclic"):
        sequence.cycle_recalled(memory, patterns)


def test_degree_separates_transitions_beyond_the_classical_rule(key):
    # K = 40 transitions of N = 100 bits: the classical asymmetric rule (n = 1) confuses them, n = 3 does not
    patterns = random_patterns(key, num_patterns=40, dim=100)
    classical = float(sequence.transition_bit_errors(sequence.SequenceMemory(jm.Power(1)), patterns))
    dense = float(sequence.transition_bit_errors(sequence.SequenceMemory(jm.Power(3)), patterns))
    assert classical > 0.02 and dense == 0.0
    assert not bool(sequence.cycle_recalled(sequence.SequenceMemory(jm.Power(1)), patterns))


@pytest.mark.parametrize("degree, num_memories", [(1, 29), (2, 945)])
def test_transition_errors_follow_the_gaussian_theory(degree, num_memories):
    dim = 100
    trials = [
        float(
            sequence.transition_bit_errors(
                sequence.SequenceMemory(jm.Power(degree)), random_patterns(k, num_patterns=num_memories, dim=dim)
            )
        )
        for k in jax.random.split(jax.random.key(degree), 4)
    ]
    measured = np.mean(trials)
    theory = sequence.transition_error_probability(dim, num_memories, degree)
    assert 0.005 < theory < 0.2
    assert measured == pytest.approx(theory, rel=0.25)
    # more transitions, more errors: the measured rate moves as the formula does
    more = float(
        sequence.transition_bit_errors(
            sequence.SequenceMemory(jm.Power(degree)),
            random_patterns(jax.random.key(9), num_patterns=2 * num_memories, dim=dim),
        )
    )
    assert more > measured
    assert sequence.transition_error_probability(dim, 2 * num_memories, degree) > theory


def test_exponential_separation_stores_more_than_any_low_degree(key):
    patterns = random_patterns(key, num_patterns=2000, dim=64)
    assert float(sequence.transition_bit_errors(sequence.SequenceMemory(jm.Exponential(1.0)), patterns)) == 0.0
    assert float(sequence.transition_bit_errors(sequence.SequenceMemory(jm.Power(2)), patterns)) > 0.05


def test_vmap_equals_a_loop_and_jit_equals_eager(key):
    patterns = random_patterns(key, num_patterns=20, dim=50)
    cues = flip_bits(jax.random.key(3), patterns[:4], fraction=0.2)
    memory = sequence.SequenceMemory(jm.Power(4))
    batched = jax.vmap(lambda c: sequence.recall(memory, c, patterns, steps=3))(cues)
    looped = jnp.stack([sequence.recall(memory, c, patterns, steps=3) for c in cues])
    jitted = jax.jit(lambda c: sequence.recall(memory, c, patterns, steps=3))(cues[0])
    np.testing.assert_array_equal(batched, looped)
    np.testing.assert_array_equal(jitted, looped[0])


def test_engine_runs_maps_through_iterate_only(key):
    patterns = random_patterns(key, num_patterns=5, dim=16)
    memory = sequence.SequenceMemory(jm.Power(2))
    solution = jm.retrieve(memory, patterns[0], patterns, solver=jm.Iterate(), steps=10, tol=0.0)
    # a cycle is no fixed point: all 10 steps run, and the stop rule reports no convergence
    assert solution.energy is None and solution.trajectory_energy is None
    assert int(solution.num_steps) == 10 and not bool(solution.converged)
    np.testing.assert_array_equal(solution.state, patterns[0])  # 10 steps round a 5-cycle
    clamped = jm.retrieve(memory, patterns[0], patterns, solver=jm.Iterate(), steps=1, mask=jnp.arange(16) < 4)
    np.testing.assert_array_equal(clamped.state[:4], patterns[0, :4])
    np.testing.assert_array_equal(clamped.state[4:], patterns[1, 4:])
    with pytest.raises(TypeError, match="Iterate"):
        jm.retrieve(memory, patterns[0], patterns)
    with pytest.raises(TypeError, match="AbstractMap"):
        jm.retrieve(jm.DenseEnergy(jm.Power(2)), patterns[0], patterns, solver=jm.Iterate())
    with pytest.raises(ValueError, match="ImplicitAdjoint"):
        jm.retrieve(memory, patterns[0], patterns, solver=jm.Iterate(), tol=0.0, adjoint=jm.ImplicitAdjoint())
    with pytest.raises(TypeError):
        jm.dynamics.AbstractMap()


def test_bad_input_is_refused_before_any_work(key):
    patterns = random_patterns(key, num_patterns=5, dim=16)
    memory = sequence.SequenceMemory(jm.Power(2))
    with pytest.raises(ValueError, match="-1 and \\+1"):
        sequence.recall(memory, patterns[0], 0.5 * patterns, steps=2)
    with pytest.raises(ValueError, match="K >= 2"):
        sequence.recall(memory, patterns[0], patterns[:1], steps=2)
    with pytest.raises(ValueError, match="features"):
        jm.retrieve(memory, patterns[0, :8], patterns, solver=jm.Iterate())
    with pytest.raises(ValueError, match="steps"):
        sequence.recall(memory, patterns[0], patterns, steps=0)
    with pytest.raises(TypeError, match="cyclic"):
        sequence.SequenceMemory(jm.Power(2), cyclic=1)
    with pytest.raises(TypeError, match="SequenceMemory"):
        sequence.recall(jm.DenseEnergy(jm.Power(2)), patterns[0], patterns, steps=2)
    with pytest.raises(ValueError, match="num_memories"):
        sequence.transition_error_probability(100, 0, 2)


def _pattern(dim, first, overlap):
    """A +-1 pattern with first bit `first` and overlap `overlap` with the all-ones state."""
    plus = (dim - 1 + overlap - first) // 2
    return np.array([first] + [1] * plus + [-1] * (dim - 1 - plus), np.float32)


def test_a_tie_beyond_float32_integers_is_settled_exactly_and_otherwise_refused():
    # 21^3 + 257^3 = 167^3 + 231^3 (a taxicab identity): bit 0's field is exactly 0, but 257^3 is
    # not a float32 integer, so the rounded terms do not cancel; integer arithmetic settles it
    dim = 257
    patterns = np.stack([_pattern(dim, -1, 21), _pattern(dim, 1, 257), _pattern(dim, 1, 167), _pattern(dim, -1, 231)])
    state = np.ones(dim, np.float32)
    exact = literal_step(patterns, state, 3)
    assert exact[0] == 1.0  # the exact rule keeps the bit
    memory = sequence.SequenceMemory(jm.Power(3))
    solution = jm.retrieve(memory, state, patterns, solver=jm.Iterate(), steps=1)
    np.testing.assert_array_equal(solution.state, exact)
    batched = jax.vmap(lambda x: memory.next_state(x, jnp.asarray(patterns)))(jnp.stack([state, -state]))
    np.testing.assert_array_equal(batched[0], exact)
    # F = exp(beta z) has no exact form: sums that differ by 8 beta^2 (beta = 1e-3) are refused, not guessed
    values, signs = jnp.array([1.0, 7.0, 3.0, 5.0]), jnp.array([[1.0], [1.0], [-1.0], [-1.0]])
    with pytest.raises(Exception, match="near tie float32 cannot decide"):
        signed_sums_sign(jm.Exponential(1e-3), values, signs).block_until_ready()
    # a tie in integers small enough to be exact, 1^2 + 7^2 = 5^2 + 5^2 (the largest term alone, not
    # cancelled), is decided as one: the bit is kept
    small = 13
    patterns = np.stack([_pattern(small, -1, 1), _pattern(small, 1, 7), _pattern(small, 1, 5), _pattern(small, -1, 5)])
    state = np.ones(small, np.float32)
    exact = literal_step(patterns, state, 2)
    assert exact[0] == 1.0
    field = sum(int(np.roll(patterns, -1, 0)[m, 0]) * int(patterns[m] @ state) ** 2 for m in range(4))
    assert field == 0
    got = sequence.SequenceMemory(jm.Power(2)).next_state(jnp.asarray(state), jnp.asarray(patterns))
    np.testing.assert_array_equal(got, exact)


def test_half_precision_is_decided_in_float32(key):
    rng = np.random.default_rng(5)
    patterns = rng.choice([-1.0, 1.0], size=(100, 101)).astype(np.float32)
    cue = patterns[0] * np.where(rng.random(101) < 0.2, -1, 1)
    exact = literal_step(patterns, cue, 1)
    memory = sequence.SequenceMemory(jm.Power(1))
    for dtype in (jnp.float16, jnp.bfloat16):
        state = jm.retrieve(
            memory, jnp.asarray(cue, dtype), jnp.asarray(patterns, dtype), solver=jm.Iterate(), steps=1
        ).state
        assert state.dtype == dtype
        np.testing.assert_array_equal(np.asarray(state, np.float32), exact)


def test_missing_or_malformed_arguments_name_themselves(key):
    patterns = random_patterns(key, num_patterns=5, dim=16)
    memory = sequence.SequenceMemory(jm.Power(2))
    with pytest.raises(ValueError, match="params"):
        jm.retrieve(memory, patterns[0], None, solver=jm.Iterate())
    with pytest.raises(ValueError, match="x0"):
        jm.retrieve(memory, (patterns[0], patterns[1]), patterns, solver=jm.Iterate())
