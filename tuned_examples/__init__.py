"""Runnable REINFORCE++ configurations (`rllib-rpp train <name>`)."""
