"""Samplers: batched generation backends behind one small interface (no Ray in here)."""

from rllib_rpp.samplers.base import Generation, SamplingParams, make_sampler

__all__ = ["Generation", "SamplingParams", "make_sampler"]
