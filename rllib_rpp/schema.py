"""Every name a REINFORCE++ sample carries, from the env runner to the loss. No Ray in here.

An iteration's data lives in two shapes:

**Episode** (one RLlib ``SingleAgentEpisode`` per completion; one step: prompt -> response)

==========================  =======================  ===========  =======================================
key                         where on the episode     shape/dtype  written by
==========================  =======================  ===========  =======================================
observation                 ``get_observations(0)``  {P} int64    TextEnvRunner: left-padded prompt ids
                                                                  and attention mask (``input_ids``,
                                                                  ``attention_mask``)
action                      ``get_actions(0)``       [R] int64    TextEnvRunner: right-padded response
reward                      ``get_rewards(0)``       float        TextEnvRunner: the env's reward step
``RESPONSE_MASK``           extra_model_outputs      [R] float32  TextEnvRunner: 1 on every response token
                                                                  (a prefix: the response's length)
``LOSS_MASK``               extra_model_outputs      [R] float32  TextEnvRunner: 1 on the tokens trained on
                                                                  (the policy's own; holes allowed)
``SAMPLER_LOGPROBS``        extra_model_outputs      [R] float32  TextEnvRunner: the sampler's log-probs
``GROUP_ID``                custom_data              int          TextEnvRunner: one id per prompt draw
``TRUNCATED``               custom_data              bool         TextEnvRunner: hit max_new_tokens
``REWARD_SKIPPED``          custom_data              bool         TextEnvRunner: its reward call failed
                                                                  (on_reward_error="skip"): not trained on
``WEIGHTS_VERSION``         custom_data              int          TextEnvRunner: weights that sampled it
``TASK``                    custom_data              str | None   TextEnvRunner: its prompt's `task` column
                                                                  (a mixture's task; the curriculum reads it)
``SCORE``                   custom_data              float        driver (``ReinforcePP._score``): s (§6)
``LOSS_WEIGHT``             custom_data              float        driver: 0 drops it from the loss
==========================  =======================  ===========  =======================================

R = ``max_new_tokens``, P = the env's ``max_prompt_tokens``.

**Token batch** (a dict of torch tensors on the learner's device, B rows = completions; the
columns are trimmed ONCE to the longest prompt P' and response R' of the learner's shard)

=====================  ===========  ===================  =============================================
column                 shape        dtype                written by
=====================  ===========  ===================  =============================================
``PROMPT_IDS``         [B, P']      int64                connector ``EpisodesToTokenBatch``
``PROMPT_MASK``        [B, P']      int64                connector (1 = real prompt token)
``RESPONSE_IDS``       [B, R']      int64                connector
``RESPONSE_MASK``      [B, R']      float32              connector: attention over the response, a
                                                         prefix of each row (lengths, trimming, forward)
``LOSS_MASK``          [B, R']      float32              connector (x LOSS_WEIGHT), learner (NaN rows):
                                                         the tokens in KL, returns, whitening and loss
``SAMPLER_LOGPROBS``   [B, R']      float32              connector (from the episode)
``SCORES``             [B]          float32              connector (from ``SCORE``)
``OLD_LOGPROBS``       [B, R']      float32              learner: log π_old, recomputed (no grad), or a
                                                         copy of SAMPLER_LOGPROBS (old_logprobs="sampler")
``REF_LOGPROBS``       [B, R']      float32              learner: log π_ref (no grad)
``ENTROPY``            [B, R']      float32              learner: entropy of π_old (logging; NaN with
                                                         old_logprobs="sampler")
``ADVANTAGES``         [B, R']      float32              learner: Â_t (§2), 0 at padding
``IS_WEIGHTS``         [B, R']      float32              learner: TIS weights x is_mask_range's 0/1 mask
                                                         (only with tis_cap or is_mask_range)
=====================  ===========  ===================  =============================================

All [B, R'] columns are 0 at padding. Log-probs are computed at every response token (holes of
the loss mask included: they are context); only LOSS_MASK tokens enter the loss. Mini-batches and
micro-batches are row slices of this.
"""

# Episode keys (extra_model_outputs / custom_data).
RESPONSE_MASK = "response_mask"
LOSS_MASK = "loss_mask"
SAMPLER_LOGPROBS = "sampler_logprobs"
GROUP_ID = "group_id"
TRUNCATED = "truncated_response"
REWARD_SKIPPED = "reward_skipped"
WEIGHTS_VERSION = "weights_version"
TASK = "task"
SCORE = "score"
LOSS_WEIGHT = "loss_weight"

# Token-batch columns.
PROMPT_IDS = "prompt_ids"
PROMPT_MASK = "prompt_mask"
RESPONSE_IDS = "response_ids"
SCORES = "scores"
OLD_LOGPROBS = "old_logprobs"
REF_LOGPROBS = "ref_logprobs"
ENTROPY = "entropy"
ADVANTAGES = "advantages"
IS_WEIGHTS = "is_weights"

# The four columns a forward pass needs.
TOKEN_COLUMNS = (PROMPT_IDS, PROMPT_MASK, RESPONSE_IDS, RESPONSE_MASK)
# The columns that hold one value per response token.
PER_TOKEN_COLUMNS = (RESPONSE_IDS, RESPONSE_MASK, LOSS_MASK, SAMPLER_LOGPROBS, OLD_LOGPROBS, REF_LOGPROBS, ENTROPY,
                     ADVANTAGES, IS_WEIGHTS)
