"""Registry of the package's executables: ``name -> "module:function"``.

One table serves ``setup.py`` (console scripts), ``ros2 run snapflow_ros <name>`` and ``python -m
snapflow_ros <name>``. It imports nothing, so ``setup.py`` can read it before the package's
dependencies are installed. The ROS executables (nodes, and ``sim_demos``, ``demo``, ``bench``
which start nodes) go through ``nodes/entry.py`` / ``apps/entry.py``, which install their
SIGINT/SIGTERM handling first.

Names: ``ros2 run`` and ``python -m`` use the table's names (``distill``, ``eval``). On a user's
PATH (pip puts console scripts in ``<venv>/bin``) they are prefixed, ``path_name``:
``snapflow-distill``, ``snapflow-eval`` (a bare ``eval`` would shadow nothing but confuse
everyone: it is a shell builtin).
"""

TOOLS: dict[str, str] = {
    "bench": "snapflow_ros.apps.entry:bench",
    "demo": "snapflow_ros.apps.entry:demo",
    "demo_synthetic": "snapflow_ros.apps.demo_synthetic:main",
    "mujoco_bridge": "snapflow_ros.nodes.entry:mujoco_bridge",
    "sim_demos": "snapflow_ros.apps.entry:sim_demos",
    "distill": "snapflow_ros.distill.cli:main_distill",
    "eval": "snapflow_ros.distill.cli:main_eval",
    "export": "snapflow_ros.apps.export:main",
    "policy_node": "snapflow_ros.nodes.entry:policy_node",
    "bag_to_lerobot": "snapflow_ros.data.bag_to_lerobot:main",
    "record": "snapflow_ros.nodes.entry:record",
}

DESCRIPTIONS: dict[str, str] = {
    "bench": "time 1-NFE vs N-step action-chunk generation per stage (prints JSON with --json)",
    "demo": "closed-loop demo: sim demos -> bags -> dataset -> teacher -> SnapFlow -> ROS nodes",
    "demo_synthetic": "one-minute SnapFlow demo on a tiny SmolVLA and synthetic data (no ROS)",
    "mujoco_bridge": "ROS 2 node: MuJoCo scene on the topic map's topics, /clock, reset, success",
    "sim_demos": "scripted-expert demos through the MuJoCo bridge, one rosbag2 (mcap) per episode",
    "distill": "SnapFlow self-distillation of a LeRobot policy on a LeRobot dataset (+ eval)",
    "eval": "held-out eval: 10-step teacher, naive 1-step, SnapFlow 1/2-step (eval.json + png)",
    "export": "SnapFlow student -> plain 1-step LeRobot policy (phi folded; lerobot-eval, server)",
    "policy_node": "ROS 2 node: cameras + joint states in, 1-NFE action chunks out",
    "bag_to_lerobot": "rosbag2 (sqlite3/mcap) → LeRobot v3.0 dataset, stamp-synced, + sync report",
    "record": "ROS 2 node: record the topic map's topics, one rosbag2 per episode (services)",
}


PATH_PREFIX = "snapflow-"


def path_name(tool: str) -> str:
    """The console script's name on PATH: ``bag_to_lerobot`` → ``snapflow-bag-to-lerobot``."""
    return PATH_PREFIX + tool.replace("_", "-")
