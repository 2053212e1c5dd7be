"""Package layout that pyproject.toml cannot express (all metadata is in pyproject.toml).

The code is under src/; the Hydra config tree is the top-level conf/, installed as the
subpackage ``accelopt.conf`` so that a non-editable ``pip install .`` can train from any folder.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages("src", include=["accelopt*", "hydra_plugins*"]),
        "accelopt.conf",
    ],
    package_dir={"": "src", "accelopt.conf": "conf"},
)
