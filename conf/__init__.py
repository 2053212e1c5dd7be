"""The Hydra config tree (yaml only); a package so that wheels ship it as ``accelopt.conf``."""
