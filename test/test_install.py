"""Where ``ros2 run`` and launch_ros look: every tool in ``<prefix>/lib/snapflow_ros/``.

Without the ROS 2 CLI (no wheels), this checks what it would check: for the README's install
(``scripts/setup.sh``: pip into the venv) and for ``colcon build`` (colcon from PyPI in a
throw-away folder, run with the venv's Python), each executable of the tool table exists in
``lib/snapflow_ros/``, is executable, its interpreter line names a Python that has the package,
and it runs (``--help``). The package's share directory holds the launch and config files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapflow_ros._tools import TOOLS, path_name

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ("policy_node", "record", "mujoco_bridge")  # --help without importing torch


def _check_libexec(prefix: Path, env: dict | None = None) -> None:
    libexec = prefix / "lib" / "snapflow_ros"
    assert libexec.is_dir(), f"{libexec} does not exist: ros2 run would find no executable"
    missing = [t for t in TOOLS if not os.access(libexec / t, os.X_OK)]
    assert not missing, f"not executable in {libexec}: {missing}"
    for tool in TOOLS:
        shebang = (libexec / tool).read_text().splitlines()[0]
        assert shebang.startswith("#!"), (tool, shebang)
        interpreter = shebang[2:].split()[0]
        assert os.access(interpreter, os.X_OK), (tool, interpreter)
    out = subprocess.run([shebang[2:].split()[0], "-c", "import snapflow_ros, rclpy"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for tool in CHEAP:
        run = subprocess.run([str(libexec / tool), "--help"], capture_output=True, text=True,
                             timeout=120, env=env)
        assert run.returncode == 0 and "usage" in run.stdout, (tool, run.stderr[-500:])
    share = prefix / "share" / "snapflow_ros"
    for rel in ("package.xml", "launch/policy.launch.py", "launch/sim.launch.py",
                "config/policy.yaml", "config/topic_map.yaml"):
        assert (share / rel).is_file(), share / rel
    assert (prefix / "share/ament_index/resource_index/packages/snapflow_ros").is_file()


def test_the_readme_install_puts_every_tool_where_ros2_run_looks():
    """``scripts/setup.sh`` (the README's install) links the console scripts into lib/."""
    if not (Path(sys.prefix) / "lib" / "snapflow_ros").exists() and sys.prefix == sys.base_prefix:
        pytest.skip("not running in the venv that scripts/setup.sh made (no lib/snapflow_ros "
                    "to check): run the suite through `make test`")
    _check_libexec(Path(sys.prefix))
    bin_dir = Path(sys.prefix) / "bin"
    assert all((bin_dir / path_name(tool)).is_file() for tool in TOOLS)
    bare = [tool for tool in TOOLS if (bin_dir / tool).exists()]
    assert not bare, f"bare tool names on PATH: {bare} (expected snapflow-<tool>)"


@pytest.mark.slow
def test_colcon_build_puts_every_tool_where_ros2_run_looks(tmp_path):
    """colcon (from PyPI, in a throw-away folder) run with this venv's Python."""
    colcon = tmp_path / "colcon"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(colcon),
                          "colcon-common-extensions==0.3.0", "-c", str(ROOT / "constraints.txt")],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        if "No matching distribution" in pip.stderr or "connection" in pip.stderr.lower():
            pytest.skip(f"colcon could not be installed from PyPI (no index reachable: "
                        f"nothing to build with): {pip.stderr[-300:]}")
        raise AssertionError(pip.stderr[-2000:])
    src = tmp_path / "src" / "snapflow_ros"
    src.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    # the working tree's packaging files, so the test checks what is being changed
    for rel in ("setup.py", "setup.cfg", "package.xml"):
        (src / rel).write_bytes((ROOT / rel).read_bytes())
    env = {**os.environ, "PYTHONPATH": str(colcon)}
    build = subprocess.run([sys.executable, "-m", "colcon", "build", "--base-paths", str(src),
                            "--build-base", str(tmp_path / "build"),
                            "--install-base", str(tmp_path / "install")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    # as `source install/setup.bash` would: the workspace's package first on the path (the
    # colcon scripts find their entry point by name in the first snapflow-ros distribution)
    prefix = tmp_path / "install" / "snapflow_ros"
    site = next(prefix.glob("lib/python3*/site-packages"))
    _check_libexec(prefix, env={**os.environ, "PYTHONPATH": str(site)})
