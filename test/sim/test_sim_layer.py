"""sim/ is the MuJoCo layer: mujoco + numpy + stdlib, never rclpy (DESIGN §3)."""

import ast
import subprocess
import sys
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "snapflow_ros" / "sim"
ALLOWED = {"mujoco", "numpy", "snapflow_ros", "__future__", "collections", "ctypes",
           "dataclasses", "importlib", "json", "logging", "os", "pathlib", "secrets", "sys",
           "tempfile", "threading", "time", "typing", "xml"}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_sim_imports_only_mujoco_numpy_and_stdlib():
    for path in sorted(SIM.rglob("*.py")):
        extra = set(_imports(path)) - ALLOWED
        assert not extra, f"{path.name} imports {extra}"


def test_sim_works_with_ros_absent_and_picks_a_gl_backend():
    code = ("import sys, os\n"
            "os.environ.pop('MUJOCO_GL', None)\n"
            "for m in ('rclpy', 'sensor_msgs', 'std_msgs'): sys.modules[m] = None\n"
            "import snapflow_ros.sim.env, snapflow_ros.sim.expert, snapflow_ros.sim.runner\n"
            "from snapflow_ros.sim import GL_BACKEND\n"
            "print(GL_BACKEND, os.environ['MUJOCO_GL'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SIM.parents[1])
    assert out.returncode == 0, out.stderr
    backend, env = out.stdout.split()
    assert backend == env and backend in ("egl", "osmesa")


def test_an_explicit_gl_choice_is_kept():
    code = ("import os\nos.environ['MUJOCO_GL'] = 'osmesa'\n"
            "from snapflow_ros.sim import GL_BACKEND\nprint(GL_BACKEND)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SIM.parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "osmesa", out.stderr
