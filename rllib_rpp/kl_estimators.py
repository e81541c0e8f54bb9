"""The KL-estimator table (§1): the name an option gives (`kl_estimator="k2"`) -> the function of
δ = log π - log π_ref the math receives (`functional.token_kl`). A user's estimator is one
`KL_ESTIMATORS.register` call, or a "module:name" path for remote learners. Pure torch, no Ray."""

from __future__ import annotations

from rllib_rpp import functional as F
from rpp_hub.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator", callable, kind_name="function of δ [B, T] -> [B, T]", entries={
    "k1": F.kl_k1,  # δ: the reward placement's default
    "k2": F.kl_k2,  # δ²/2: the loss placement's default
    "k3": F.kl_k3,  # exp(-δ) - 1 + δ
})


def get_kl_estimator(name: str) -> F.KLEstimator:
    """The function of a registered name, or of a "module:name" path."""
    return KL_ESTIMATORS.resolve(name)
