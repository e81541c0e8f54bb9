"""REINFORCE++ for aligning language models, as a Ray RLlib algorithm."""

__version__ = "0.1.0"
