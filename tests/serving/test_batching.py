"""Which requests the server may stack, and how results are cut back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serving_toy_policies import ToyPolicy, make_obs

from fastvla.serving.batching import InferRequest, flatten, infer_batch_size, merge, split, unflatten


def _request(obs: dict, task=None, batched=None) -> InferRequest:
    leaves = flatten(obs)
    size = infer_batch_size(leaves, task, batched)
    return InferRequest(obs, task, size, leaves, asyncio.Future, 0.0)


def test_flatten_round_trip_and_non_numeric_leaves() -> None:
    obs = make_obs(0)
    leaves = flatten(obs)
    assert set(leaves) == {"pixels/front", "agent_pos"}
    assert unflatten(leaves)["pixels"]["front"] is obs["pixels"]["front"]
    assert flatten({"a": np.zeros(2), "name": "cube"}) is None


@pytest.mark.parametrize(
    ("obs", "task", "batched", "expected"),
    [
        (make_obs(0), None, None, 0),  # image (H, W, 3): single
        (make_obs(0, batch=3), None, None, 3),  # image (B, H, W, 3): batch
        ({"state": np.zeros(4, np.float32)}, None, None, None),  # no image: unknown, runs alone
        ({"state": np.zeros((2, 4), np.float32)}, ["a", "b"], None, 2),  # list task: batch
        ({"state": np.zeros((2, 4), np.float32)}, None, True, 2),  # client says so
        ({"a": np.zeros((2, 4)), "b": np.zeros((3, 4))}, None, True, None),  # ragged batch
    ],
)
def test_infer_batch_size(obs, task, batched, expected) -> None:
    assert infer_batch_size(flatten(obs), task, batched) == expected


def test_merge_then_split_equals_separate_calls() -> None:
    policy = ToyPolicy()
    requests = [
        _request(make_obs(1), "pick"),
        _request(make_obs(2, batch=2), ["place", "push"]),
        _request(make_obs(3), "stack"),
    ]
    assert len({r.merge_key() for r in requests}) == 1
    obs, tasks = merge(requests)
    assert obs["pixels"]["front"].shape == (4, 8, 8, 3) and tasks == ["pick", "place", "push", "stack"]
    parts = split(policy.predict_action_chunk(obs, tasks), requests)
    for request, part in zip(requests, parts):
        np.testing.assert_allclose(part, policy.predict_action_chunk(request.obs, request.task), rtol=1e-6)
    assert parts[0].shape == (4, 3) and parts[1].shape == (2, 4, 3)


def test_requests_that_must_not_merge() -> None:
    single = _request(make_obs(1), "pick")
    assert _request(make_obs(1), None).merge_key() != single.merge_key()  # default task vs explicit
    other_size = {"pixels": {"front": np.zeros((16, 16, 3), np.uint8)}, "agent_pos": np.zeros(5, np.float32)}
    assert _request(other_size, "pick").merge_key() != single.merge_key()
    assert _request(make_obs(1, batch=2), ["only one"]).merge_key() is None
    with pytest.raises(ValueError, match="batch of 2"):
        split(np.zeros((3, 4, 3)), [single, single])
