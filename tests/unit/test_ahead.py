"""Rollouts sampled ahead of the trainer, with a producer that only records what it is asked to sample: the
order, the policy version each batch is sampled by, the engines held while weights move, the batches a
checkpoint keeps and what a resumed run does with them, errors and stopping."""
import threading
import time

import pytest

from rlsys.rollouts.ahead import AheadRollouts, Batch, sampling_version


class Producer:
    def __init__(self, fail_at: int | None = None):
        self.sampled: list[tuple[int, int]] = []  # (step, version) in the order asked
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def __call__(self, step: int, version: int) -> Batch:
        with self.lock:
            self.sampled.append((step, version))
        if step == self.fail_at:
            raise RuntimeError("engine down")
        time.sleep(0.01)
        return Batch(step, version, groups=[f"groups of step {step}"], sampled=[f"groups of step {step}"])


def settle(seconds: float = 0.2) -> None:
    """Long enough for the producer to sample whatever it is allowed to."""
    time.sleep(seconds)


def train(ahead: AheadRollouts, steps: range) -> list[Batch]:
    """What the trainer does: take each step's batch, then publish the weights that step made."""
    taken = []
    for step in steps:
        batch, _ = ahead.take(step)
        taken.append(batch)
        ahead.publish(step, lambda: None)
    return taken


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_batch_is_sampled_once_in_order_by_the_version_its_step_allows(k):
    producer = Producer()
    ahead = AheadRollouts(producer, k, last_step=8)
    ahead.start(0, [])
    taken = train(ahead, range(1, 9))
    ahead.stop()
    ahead.join()
    assert [b.step for b in taken] == list(range(1, 9))
    assert producer.sampled == [(s, sampling_version(s, k)) for s in range(1, 9)], "never staler, never fresher"


def test_nothing_is_sampled_before_the_first_take_nor_while_weights_move():
    producer = Producer()
    ahead = AheadRollouts(producer, 2, last_step=6)
    ahead.start(0, [])
    settle()
    assert producer.sampled == [], "the engines are the trainer's until it takes a batch"
    ahead.take(1)
    settle()
    assert ahead.buffered() and [b.step for b in ahead.buffered()] == [2, 3], "K batches ahead, no more"

    def send() -> None:
        before = list(producer.sampled)
        assert not ahead.busy
        settle()
        assert producer.sampled == before, "no sampling while the weights change"

    ahead.publish(1, send)
    assert ahead.version == 1
    ahead.stop()
    ahead.join()


def test_a_checkpoints_buffered_batches_are_trained_without_sampling_them_again():
    first = Producer()
    ahead = AheadRollouts(first, 2, last_step=8)
    ahead.start(0, [])
    train(ahead, range(1, 3))
    kept = ahead.buffered()  # between steps: what a checkpoint at step 2 stores
    ahead.stop()
    ahead.join()
    assert [(b.step, b.version) for b in kept] == [(3, 0), (4, 1)]

    again = Producer()
    resumed = AheadRollouts(again, 2, last_step=8)
    resumed.start(2, kept)
    taken = train(resumed, range(3, 9))
    resumed.stop()
    resumed.join()
    assert [(b.step, b.version) for b in taken[:2]] == [(3, 0), (4, 1)] and taken[0] is kept[0]
    assert again.sampled == [(s, sampling_version(s, 2)) for s in range(5, 9)], "only the batches not kept"


def test_kept_batches_staler_than_a_smaller_k_are_sampled_again():
    kept = [Batch(3, 0, [], []), Batch(4, 1, [], [])]  # a K=2 run's checkpoint at step 2
    producer = Producer()
    ahead = AheadRollouts(producer, 1, last_step=4)
    ahead.start(2, kept)
    taken = train(ahead, range(3, 5))
    ahead.stop()
    ahead.join()
    assert producer.sampled == [(3, 2), (4, 2)], "batch 3 lags 2 versions, more than K=1: it and what follows"
    assert [b.version for b in taken] == [2, 2]


def test_a_producer_error_reaches_the_trainer_at_its_next_wait():
    ahead = AheadRollouts(Producer(fail_at=3), 1, last_step=5)
    ahead.start(0, [])
    train(ahead, range(1, 2))
    ahead.take(2)
    with pytest.raises(RuntimeError, match="engine down"):  # publish waits for batch 3, which failed
        ahead.publish(2, lambda: None)
    ahead.stop()
    ahead.join()


def test_stop_ends_the_producer_and_a_waiting_trainer():
    ahead = AheadRollouts(Producer(), 1, last_step=5)
    ahead.start(0, [])
    ahead.stop()
    ahead.join(timeout_s=5)
    assert not ahead.thread.is_alive()
    with pytest.raises(RuntimeError, match="stopped"):
        ahead.take(1)


def test_nothing_is_sampled_past_the_last_step():
    producer = Producer()
    ahead = AheadRollouts(producer, 3, last_step=2)
    ahead.start(0, [])
    train(ahead, range(1, 3))
    settle()
    ahead.stop()
    ahead.join()
    assert [s for s, _ in producer.sampled] == [1, 2]
