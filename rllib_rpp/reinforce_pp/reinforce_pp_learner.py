"""Framework-independent part of the REINFORCE++ learner: its connector piece, where the token batch
is prepared (π_old, π_ref, Â), β (fixed or adaptive, §1) and β in checkpoints."""

from __future__ import annotations

import abc
from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import Learner
from ray.rllib.utils.annotations import override

from rllib_rpp.core.options import UpdateOptions
from rllib_rpp.functional import adaptive_kl_coef
from rllib_rpp.heap import freeze_built_objects
from rllib_rpp.reinforce_pp.connectors import EpisodesToTokenBatch

KL_COEF = "kl_coef"


class ReinforcePPLearner(Learner):
    @override(Learner)
    def build(self) -> None:
        super().build()
        self.kl_coef = float(self.config.kl_coef)
        self.options = UpdateOptions.from_config(self.config)
        self._kl_per_seq = 0.0  # the last batch's mean per-sequence KL(π_old || π_ref), all learners
        self._num_seqs = 0
        self.build_reference_model()
        if self._learner_connector is not None:
            self._learner_connector.append(EpisodesToTokenBatch(device=self._device))
        if self.config.num_learners > 0:  # an actor of its own, alive until the algorithm stops
            freeze_built_objects()

    @abc.abstractmethod
    def build_reference_model(self) -> None:
        """Load the frozen reference policy π_ref (never trained, never synced)."""

    @abc.abstractmethod
    def prepare_batch(self, batch: dict) -> None:
        """Add π_old and π_ref log-probs and the advantages to the learner's token batch (§1, §2)."""

    @override(Learner)
    def _make_batch_if_necessary(self, training_data):
        # π_old, π_ref and Â need the learner's whole shard at once (Â is whitened over all of it): here,
        # after the connector built the token batch and before RLlib cuts it into mini-batches.
        batch = super()._make_batch_if_necessary(training_data)
        if training_data.episodes is not None:
            self.prepare_batch(batch.policy_batches[DEFAULT_MODULE_ID])
        return batch

    @override(Learner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        cfg = self.config
        if cfg.kl_target is not None:
            # Classic controller, fed the same per-sequence KL that is penalised.
            self.kl_coef = adaptive_kl_coef(self.kl_coef, self._kl_per_seq, target=cfg.kl_target,
                                            horizon=cfg.kl_horizon, n_samples=self._num_seqs)
        self.metrics.log_value((DEFAULT_MODULE_ID, KL_COEF), self.kl_coef, window=1)

    @override(Learner)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[KL_COEF] = self.kl_coef
        return state

    @override(Learner)
    def set_state(self, state) -> None:
        super().set_state(state)
        if KL_COEF in state:
            self.kl_coef = float(state[KL_COEF])
