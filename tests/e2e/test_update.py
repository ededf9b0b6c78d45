"""The update on real DeepSpeed ranks: micro-batches planned by tokens, the same count on every rank, so a
batch that does not split evenly completes under ZeRO-3 (every forward is a collective) with the loss of one
rank, and a rank with no sample still joins."""
import pytest

from tests.e2e.test_weight_sync import clipped_at, start_policy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def uneven_batch() -> dict[str, list]:
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [20, 21]]
    responses = [[30], [31, 32, 33, 34, 35, 36, 37], [38, 39, 40]]
    return {"prompt_ids": prompts, "response_ids": responses,
            "advantages": [[1.0] * len(r) for r in responses], "old_logp": [[-5.0] * len(r) for r in responses]}


def test_uneven_batch_under_zero3_completes_with_the_loss_of_one_rank(ray_cluster, tiny_model):
    policy = start_policy(tiny_model, zero_stage=3, max_tokens=12)  # 44 tokens: micro-batches of unequal size
    try:
        batch = uneven_batch()
        logp = policy.logprobs(batch)["logp"]
        assert [len(x) for x in logp] == [1, 7, 3]
        assert len(policy.logprobs({k: v[:1] for k, v in batch.items()})["logp"]) == 1  # one rank has nothing
        metrics = policy.train(batch, clipped_at(0.2))
    finally:
        policy.kill()
    single = start_policy(tiny_model, zero_stage=1, max_tokens=4096, ranks=1)
    try:
        flat = lambda rows: [x for row in rows for x in row]
        assert flat(single.logprobs(batch)["logp"]) == pytest.approx(flat(logp), abs=1e-5)
        expected = single.train(batch, clipped_at(0.2))
    finally:
        single.kill()
    assert metrics["policy_loss"] == pytest.approx(expected["policy_loss"], abs=1e-6)
    assert metrics["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-4)
