"""Work on lanes: results in the items' order, the first failed item's error, the
caller's modes in the lanes and its thread count kept."""

import threading

import pytest
import torch

from deconvviz.engine.lanes import lanes_for, on_lanes


def test_lanes_for_counts_threads_and_pieces():
    assert lanes_for("cpu", 0) == 1
    assert lanes_for("cpu", 1) == 1
    assert lanes_for("cpu", 100) == torch.get_num_threads()
    assert lanes_for("meta", 100) == 1  # not the CPU: one lane


def test_results_keep_the_items_order_and_run_on_other_threads():
    seen = set()

    def square(i):
        seen.add(threading.get_ident())
        return i * i

    assert on_lanes(square, range(20), 2) == [i * i for i in range(20)]
    assert threading.get_ident() not in seen and 1 <= len(seen) <= 2
    assert on_lanes(square, [3], 2) == [9]  # one item: run here
    assert on_lanes(square, [], 2) == []


def test_the_first_failed_item_is_raised_and_later_items_do_not_start():
    started = []
    gate = threading.Event()

    def work(i):
        started.append(i)
        if i == 3:
            gate.wait(5)  # item 4 fails first in time
            raise ValueError("item 3")
        if i == 4:
            try:
                raise ValueError("item 4")
            finally:
                gate.set()
        return i

    with pytest.raises(ValueError, match="item 3"):
        on_lanes(work, range(40), 2)
    assert max(started) <= 5  # at most one item started after the failures


def test_modes_and_thread_count_hold():
    threads = torch.get_num_threads()

    def modes(_):
        return (
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            torch.get_num_threads(),
        )

    with torch.no_grad():
        assert set(on_lanes(modes, range(4), 2)) == {(False, False, 1)}
    with torch.inference_mode():
        got = set(on_lanes(modes, range(4), 2))
    assert got == {(False, True, 1)}
    assert set(on_lanes(modes, range(4), 2)) == {(True, False, 1)}
    assert torch.get_num_threads() == threads
