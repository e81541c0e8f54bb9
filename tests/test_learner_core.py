"""The learner's loss as actually computed: KL placement for every flag combination and every
estimator's default, each estimator's advantages, and truncated importance sampling."""

import pytest
import torch
from helpers import small_config
from ray.rllib.core import DEFAULT_MODULE_ID

import rllib_rpp.functional as F
from envs import SingleTurnTextEnv
from rllib_rpp import schema as S
from rllib_rpp.core.scoring import score_batch
from rllib_rpp.estimators import ESTIMATORS, Estimator, register_estimator

BETA = 0.05
_ENV = {}


def make_learner(**training):
    training.setdefault("kl_coef", BETA)
    training.setdefault("old_logprobs", "recompute")  # token_batch's sampler log-probs are made up
    cfg = small_config(**training)
    cfg.validate()
    if "env" not in _ENV:
        _ENV["env"] = SingleTurnTextEnv({**cfg.env_config, "max_new_tokens": cfg.max_new_tokens})
    learner = cfg.build_learner(env=_ENV["env"])
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from π_ref so that KL(π_θ || π_ref) != 0
        for p in learner.policy_lm().parameters():
            p.add_(0.05 * torch.randn_like(p))
    return learner


def token_batch(estimator: str, seed: int = 0, n_prompts: int = 4, n: int = 3) -> tuple[dict, torch.Tensor]:
    """A batch of n_prompts x n completions of random lengths; scores from the driver's step."""
    g = torch.Generator().manual_seed(seed)
    B, P, R = n_prompts * n, 6, 5
    prompt_ids = torch.randint(20, 60, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[::2, :2] = 0  # left padding on some rows
    prompt_ids[prompt_mask == 0] = 0
    lengths = torch.randint(1, R + 1, (B,), generator=g)
    response_mask = (torch.arange(R) < lengths[:, None]).float()
    response_ids = torch.randint(20, 60, (B, R), generator=g) * response_mask.long()
    groups = torch.arange(n_prompts).repeat_interleave(n)
    raw = torch.randint(0, 2, (B,), generator=g).double() + 0.1 * torch.randn(B, generator=g, dtype=torch.float64)
    scored = score_batch(raw, torch.zeros(B, dtype=torch.bool), groups, estimator=estimator)
    batch = {S.PROMPT_IDS: prompt_ids, S.PROMPT_MASK: prompt_mask, S.RESPONSE_IDS: response_ids,
             S.RESPONSE_MASK: response_mask, S.LOSS_MASK: response_mask.clone(), S.SAMPLER_LOGPROBS: torch.zeros(B, R),
             S.SCORES: scored.scores.float()}
    return batch, scored.processed


def loss_of(learner, batch):
    fwd = learner.module[DEFAULT_MODULE_ID].forward_train(batch)
    loss = learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=learner.config, batch=batch,
                                           fwd_out=fwd)
    return loss, fwd["logprobs"]


# (kl_in_reward, use_kl_loss) -> placement, for an estimator whose default is "reward" / "loss".
# Written out here, independently of the config's logic.
PLACEMENTS = {
    (None, None): ("reward", "loss"),
    (True, None): ("reward", "reward"),
    (False, None): ("loss", "loss"),
    (None, True): ("loss", "loss"),
    (False, True): ("loss", "loss"),
    (None, False): ("reward", "none"),
    (True, False): ("reward", "reward"),
    (False, False): ("none", "none"),
}
BUILTIN = ("reinforce_pp", "reinforce_pp_baseline", "grpo", "rloo")


@pytest.mark.parametrize("estimator", BUILTIN)
@pytest.mark.parametrize("flags", list(PLACEMENTS))
def test_kl_placement_decides_the_loss_actually_computed(estimator, flags):
    kl_in_reward, use_kl_loss = flags
    default = ESTIMATORS[estimator].default_kl_placement
    expected = PLACEMENTS[flags][0 if default == "reward" else 1]
    learner = make_learner(advantage_estimator=estimator, kl_in_reward=kl_in_reward, use_kl_loss=use_kl_loss)
    batch, _ = token_batch(estimator)
    learner.prepare_batch(batch)
    loss, logprobs = loss_of(learner, batch)
    mask, old, ref = batch[S.RESPONSE_MASK], batch[S.OLD_LOGPROBS], batch[S.REF_LOGPROBS]
    est_kw = dict(whiten_globally=ESTIMATORS[estimator].whitened, kl_estimator=F.kl_k1)
    shaped = F.token_advantages(batch[S.SCORES], old, ref, mask, kl_coef=BETA, **est_kw).advantages
    plain = F.token_advantages(batch[S.SCORES], old, ref, mask, kl_coef=0.0, **est_kw).advantages
    assert (shaped - plain).abs().max() > 1e-4  # the test can tell the placements apart
    torch.testing.assert_close(batch[S.ADVANTAGES], shaped if expected == "reward" else plain)
    want = F.clipped_policy_loss(logprobs, old, batch[S.ADVANTAGES], mask).loss
    if expected == "loss":
        kl_term = F.aggregate_loss(F.token_kl(logprobs, ref, F.kl_k2), mask)
        assert kl_term > 1e-5
        want = want + BETA * kl_term
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("placement", ["reward", "loss", "none"])
def test_kl_placement_option_and_zero_beta(placement):
    learner = make_learner(kl_placement=placement)
    assert learner.options.kl_placement == placement
    assert small_config(kl_placement=placement, kl_coef=0.0).kl_placement_used == "none"
    with pytest.raises(ValueError, match="use kl_placement only"):
        small_config(kl_placement=placement, use_kl_loss=True).validate()


@pytest.mark.parametrize("estimator", BUILTIN)
def test_each_estimator_reaches_the_learner(estimator):
    # The driver's scores and the learner's whitening both follow the estimator: Â equals the
    # whole-batch reference computed from the processed rewards.
    learner = make_learner(advantage_estimator=estimator, kl_placement="reward")
    batch, processed = token_batch(estimator, seed=1)
    groups = torch.arange(4).repeat_interleave(3)
    learner.prepare_batch(batch)
    want = F.compute_advantages(processed, batch[S.OLD_LOGPROBS].double(), batch[S.REF_LOGPROBS].double(),
                                batch[S.RESPONSE_MASK].double(), estimator=ESTIMATORS[estimator], kl_coef=BETA,
                                group_ids=groups).advantages
    torch.testing.assert_close(batch[S.ADVANTAGES].double(), want, rtol=1e-4, atol=1e-5)
    others = [F.compute_advantages(processed, batch[S.OLD_LOGPROBS].double(), batch[S.REF_LOGPROBS].double(),
                                   batch[S.RESPONSE_MASK].double(), estimator=ESTIMATORS[e], kl_coef=BETA,
                                   group_ids=groups).advantages for e in BUILTIN if e != estimator]
    assert all((o - want).abs().max() > 1e-3 for o in others)  # estimators are distinguishable here


def test_tis_cap_weights_every_token_of_the_loss():
    losses = []
    for cap in (None, 2.0):
        learner = make_learner(kl_coef=0.0, tis_cap=cap)
        batch, _ = token_batch("reinforce_pp", seed=2)
        batch[S.SAMPLER_LOGPROBS] = torch.full_like(batch[S.SAMPLER_LOGPROBS], -30.0)  # far below π_old
        learner.prepare_batch(batch)
        assert (S.IS_WEIGHTS in batch) == (cap is not None)
        losses.append(loss_of(learner, batch)[0])
    # min(π_old / π_sampler, 2) = 2 on every token: the loss doubles.
    torch.testing.assert_close(losses[1], 2.0 * losses[0])


def test_a_new_estimator_is_one_table_entry():
    def mean_only(r, g):  # s = r̂ - mean_g(r̂), no whitening
        return r - g.mean(r)

    register_estimator(Estimator("test_mean_only", mean_only, needs_groups=True, whitened=False,
                                 default_kl_placement="none"))
    try:
        cfg = small_config(advantage_estimator="test_mean_only")
        cfg.validate()
        assert cfg.kl_placement_used == "none"
        with pytest.raises(ValueError, match="needs num_samples_per_prompt >= 2"):
            small_config(advantage_estimator="test_mean_only", num_samples_per_prompt=1).validate()
        learner = make_learner(advantage_estimator="test_mean_only")
        batch, processed = token_batch("test_mean_only", seed=3)
        learner.prepare_batch(batch)
        s = processed - processed.view(4, 3).mean(-1).repeat_interleave(3)
        mask = batch[S.RESPONSE_MASK]
        torch.testing.assert_close(batch[S.ADVANTAGES], (s[:, None] * mask).float())  # no KL, not whitened
    finally:
        ESTIMATORS.unregister("test_mean_only")
