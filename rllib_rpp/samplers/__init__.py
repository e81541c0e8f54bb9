"""Samplers: batched generation (transformers, vLLM, yours) behind one small interface (no Ray in here)."""

from rllib_rpp.samplers.base import (
    SAMPLERS,
    Generation,
    Sampler,
    SamplingParams,
    make_sampler,
    register_sampler,
    sampler_class,
)

__all__ = ["SAMPLERS", "Generation", "Sampler", "SamplingParams", "make_sampler", "register_sampler", "sampler_class"]
