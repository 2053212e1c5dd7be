"""Where the Hydra config tree is: ``CONFIG_DIR``, for ``accelopt.train``, ``accelopt.eval`` and
anything that reads a yaml of it.

The tree is the top-level ``conf/`` of the repository; a wheel installs it as the package
``accelopt.conf`` (``setup.py``), so a non-editable install trains from any folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_dir() -> str:
    """``conf/`` beside ``src/`` when this module runs from a checkout (editable install,
    ``PYTHONPATH=src``), else the copy a wheel installs as ``accelopt.conf``.

    The checkout is tried first because an editable install maps ``accelopt.conf`` to the
    checkout it was installed from, not to the one on ``PYTHONPATH``.
    """
    src = Path(__file__).resolve().parents[1]
    if src.name == "src" and (src.parent / "conf" / "train.yaml").is_file():
        return str(src.parent / "conf")
    return str(files("accelopt.conf"))


CONFIG_DIR = config_dir()
