"""Optimizers: the NC-escape wrapper and its GOSE / ANCM / Combined presets (torch only)."""
