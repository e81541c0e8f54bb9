"""The application around the algorithm: the `rllib-rpp` command (`cli`), its training loop (`driver`),
the console, run records, the Ray connection and signals (`run_control`), experiment tracking,
`--set`/`--config` overrides and the ready-made presets. Nothing below imports it."""
