"""The engine's thread count: the one whose steps were fastest, retried now and then when the machine changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.thread_choice import ThreadChoice, thread_counts


def run(choice: ThreadChoice, seconds: dict[int, float], steps: int, rows: int = 1) -> list[int]:
    """steps decoding steps whose time depends only on the thread count; the counts they ran with."""
    used = []
    for _ in range(steps):
        threads = choice.next(rows)
        choice.observe(threads, rows, seconds[threads])
        used.append(threads)
    return used


def test_counts_are_powers_of_two_up_to_the_cores() -> None:
    assert thread_counts(1) == (1,)
    assert thread_counts(2) == (1, 2)
    assert thread_counts(6) == (1, 2, 4)
    assert thread_counts(64) == (1, 2, 4, 8)
    assert thread_counts()[0] == 1


def test_the_faster_count_runs_and_the_slower_is_tried_ever_less_often() -> None:
    choice = ThreadChoice((1, 2), explore_every=8, max_explore_every=64)
    used = run(choice, {1: 0.054, 2: 0.046}, 500)
    assert used[:2] == [1, 2]  # each count measured once first
    tries = [step for step, threads in enumerate(used) if threads == 1][1:]
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:])]
    assert gaps[:3] == [16, 32, 64] and set(gaps[3:]) == {64}  # each lost try doubles the wait, up to the cap
    assert choice.best(1) == 2


def test_a_loaded_machine_moves_it_to_one_thread_and_an_idle_one_back() -> None:
    choice = ThreadChoice((1, 2), explore_every=8, max_explore_every=64)
    run(choice, {1: 0.054, 2: 0.046}, 50)
    loaded = run(choice, {1: 0.060, 2: 0.400}, 200)  # other threads hold the cores: two-thread steps stall
    assert loaded[-150:].count(2) <= 4 and choice.best(1) == 1
    idle = run(choice, {1: 0.054, 2: 0.046}, 200)
    assert idle[-100:].count(2) >= 95 and choice.best(1) == 2


def test_each_batch_size_is_judged_on_its_own_steps() -> None:
    choice = ThreadChoice((1, 2), explore_every=8)
    run(choice, {1: 0.05, 2: 0.04}, 20, rows=1)
    run(choice, {1: 0.07, 2: 0.09}, 20, rows=4)
    assert choice.best(1) == 2 and choice.best(4) == 1


def test_no_counts_is_refused() -> None:
    with pytest.raises(ValueError):
        ThreadChoice(())


@given(counts=st.lists(st.integers(1, 16), min_size=1, max_size=4, unique=True),
       times=st.lists(st.tuples(st.integers(1, 8), st.floats(1e-4, 10.0)), min_size=1, max_size=300))
def test_any_step_times_keep_the_choice_among_the_counts(counts, times) -> None:
    choice = ThreadChoice(counts, explore_every=4)
    for rows, seconds in times:
        threads = choice.next(rows)
        assert threads in counts
        choice.observe(threads, rows, seconds)
        assert choice.best(rows) in counts
