"""``hydra/launcher=ray`` and ``hydra/launcher=ray_cluster``: Hydra's Ray launcher, sized for accelopt."""
