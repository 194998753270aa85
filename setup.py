"""ament_python package setup for snapflow_ros (colcon and pip both use it)."""

import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "snapflow_ros"
HERE = Path(__file__).resolve().parent

# The executables live in one table that imports nothing (snapflow_ros/_tools.py).
_tools: dict = {}
exec((HERE / PACKAGE / "_tools.py").read_text(), _tools)  # noqa: S102

# Console script names. A wheel (pip) puts them on PATH (<venv>/bin): prefixed, `snapflow-eval`.
# `setup.py install` / `develop` (what colcon runs) honour setup.cfg and put them in
# <prefix>/lib/snapflow_ros/, where `ros2 run snapflow_ros <tool>` looks: the table's own names.
# (scripts/setup.sh links the pip names into <venv>/lib/snapflow_ros/ under the table's names.)
_ROS_LIBEXEC = bool({"install", "develop"} & set(sys.argv[1:]))
_names = {tool: tool if _ROS_LIBEXEC else _tools["path_name"](tool) for tool in _tools["TOOLS"]}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed", "sim/assets/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        (f"share/{PACKAGE}/config/robots", sorted(glob("config/robots/*.yaml"))),
    ],
    install_requires=["setuptools"],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="snapflow_ros developers",
    maintainer_email="snapflow-ros@users.noreply.github.com",
    description="SnapFlow 1-NFE flow-matching robot policies (SmolVLA, pi0, pi0.5) for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{_names[tool]} = {target}" for tool, target in _tools["TOOLS"].items()],
    },
)
