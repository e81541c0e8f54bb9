# Two commands do everything on a fresh machine: `make train` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup train train-real test test-fast lint tiny-model bench-throughput bench-breakdown bench-estimators bench-paper

setup:
	@bash scripts/setup.sh

train: setup
	$(PY) -m rllib_rpp train tiny-arith

# The real model: SmolLM2-135M-Instruct on reasoning-gym's one-digit sums, 20 minutes of training.
train-real: setup
	$(PY) -m rllib_rpp train smollm2

test: setup
	$(PY) -m pytest -x -q tests

# A change's first check (under 3 minutes): the math and its float64 references, the learner core, config
# validation, the layout rules, option parsing, prompts, rewards, the env's schema, checkpoint files.
FAST_TESTS := tests/test_functional.py tests/test_policy_losses.py tests/test_learner_core.py tests/test_layout.py \
	tests/test_bad_inputs.py tests/test_overrides.py tests/test_prompts.py tests/test_memory.py tests/test_console.py \
	tests/test_text_env.py tests/test_rewards.py tests/test_overlong.py tests/test_checkpoint_files.py \
	tests/test_checkpoint_dir.py tests/test_packaging.py tests/test_option_table.py tests/test_registry.py
test-fast: setup
	$(PY) -m pytest -x -q $(FAST_TESTS)

lint: setup
	$(VENV)/bin/ruff check rllib_rpp envs rpp_hub tests tuned_examples benchmarks

tiny-model: setup
	$(PY) -m rllib_rpp tiny-model

# Benchmarks (one command each; numbers and plots land in benchmarks/results/).
bench-throughput:
	@bash scripts/setup.sh cpu,dev,track,real,bench
	$(PY) -m benchmarks.throughput

bench-breakdown: setup
	$(PY) -m benchmarks.breakdown

bench-estimators: setup
	$(PY) -m benchmarks.estimators

bench-paper: setup
	$(PY) -m benchmarks.paper_stability
