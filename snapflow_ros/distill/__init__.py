"""SnapFlow self-distillation over LeRobot datasets, and its offline evaluation.

Layer rules (DESIGN §3): imports core, policies, LeRobotDataset and accelerate; never rclpy.
Entry points: ``snapflow_ros.distill.cli.main_distill`` / ``main_eval``; the Python API is
``trainer.distill(DistillConfig(...))`` and ``cli.run_eval(EvalConfig(...))``. Importing this
package is light (no torch/lerobot until a submodule needs them).
"""
