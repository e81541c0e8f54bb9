"""DAPO's soft overlong punishment: the formula against a piecewise reference, its order with the
truncation policy and normalisation, and its options."""

from __future__ import annotations

import pytest
import torch

from rllib_rpp import functional as F
from rllib_rpp.core.scoring import score_batch


def dapo_reference(length: int, l_max: int, l_buf: int, penalty: float) -> float:
    """The paper's piecewise definition (lengths never exceed l_max here: generation stops there)."""
    if length <= l_max - l_buf:
        return 0.0
    return penalty * ((l_max - l_buf) - length) / l_buf


def test_overlong_penalty_is_dapos_piecewise_ramp():
    lengths = torch.arange(0, 17)
    got = F.overlong_penalty(lengths, max_new_tokens=16, buffer_len=4, penalty=0.5)
    want = [dapo_reference(int(n), 16, 4, 0.5) for n in lengths]
    assert got.tolist() == pytest.approx(want, abs=1e-15)
    assert got[12] == 0 and got[16] == -0.5 and got[14] == pytest.approx(-0.25)
    for bad in (0, 17):
        with pytest.raises(ValueError, match=f"overlong_buffer_len={bad}"):
            F.overlong_penalty(lengths, max_new_tokens=16, buffer_len=bad)


def test_overlong_shaping_comes_before_the_truncation_policy_and_normalisation():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    lengths = torch.tensor([3, 7, 8, 8])
    truncated = torch.tensor([False, False, False, True])  # the last hit the budget without EOS
    groups = torch.tensor([0, 0, 1, 1])
    kw = dict(estimator="reinforce_pp", clip_range=None, lengths=lengths, overlong=(8, 4, 1.0))
    kept = score_batch(rewards, truncated, groups, **kw)
    assert kept.processed.tolist() == pytest.approx([1.0, 0.25, -1.0, 0.0])  # 7 tokens: 3/4 of the ramp
    penalized = score_batch(rewards, truncated, groups, truncated_response="penalize", truncated_reward=-2.0, **kw)
    assert penalized.processed.tolist() == pytest.approx([1.0, 0.25, -1.0, -2.0])  # replaced, not added to
    masked = score_batch(rewards, truncated, groups, truncated_response="mask", **kw)
    assert masked.loss_weights.tolist() == [1.0, 1.0, 1.0, 0.0]
    normalized = score_batch(rewards, truncated, groups, normalize="batch", **kw)
    shaped = torch.tensor([1.0, 0.25, -1.0, 0.0], dtype=torch.float64)
    want = (shaped - shaped.mean()) / shaped.std(unbiased=False)
    assert normalized.processed.tolist() == pytest.approx(want.tolist(), rel=1e-6)


def test_overlong_options_are_checked():
    from rllib_rpp.app.presets import tiny_arith

    tiny_arith().training(overlong_buffer_len=2, overlong_penalty=0.5).validate()
    with pytest.raises(ValueError, match="overlong_buffer_len=6 is longer than max_new_tokens=5"):
        tiny_arith().training(overlong_buffer_len=6).validate()
    with pytest.raises(ValueError, match="overlong_penalty=-1"):
        tiny_arith().training(overlong_buffer_len=2, overlong_penalty=-1).validate()
