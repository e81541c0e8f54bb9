"""What `envs` and `rllib_rpp` both stand on: the registry shape and its "module:name" resolver
(`rpp_hub.registry`). No Ray, nothing of envs or rllib_rpp."""
