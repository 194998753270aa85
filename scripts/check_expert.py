"""Run a robot's scripted expert on many seeds without ROS: success rate and where it fails.

    bash scripts/run.sh python scripts/check_expert.py --robot so101 --episodes 200
    bash scripts/run.sh python scripts/check_expert.py --robot arm --task reach_two_fixed_targets

The expert's joint plan is followed at the topic map's fps on the robot's scene (as
``sim_demos`` does through the bridge, minus ROS and cameras), seeds 0..N-1 unless
``--first-seed``. Prints one line per failed seed (the task's info) and the totals; exits 1
if any seed failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

import numpy as np

from snapflow_ros.sim.env import MujocoEnv
from snapflow_ros.sim.expert import IKError
from snapflow_ros.sim.robots import ROBOTS, make_expert
from snapflow_ros.sim.scene import Scene, load_model
from snapflow_ros.sim.tasks import make_task
from snapflow_ros.topic_map import load_topic_map


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--robot", choices=sorted(ROBOTS), default="so101")
    p.add_argument("--task", default="", help="one of the robot's tasks (default: its first)")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--first-seed", type=int, default=0)
    args = p.parse_args()
    robot = ROBOTS[args.robot]
    task_name = args.task or robot.tasks[0]
    tm = load_topic_map(robot.topic_map() or None)
    scene = Scene(load_model(robot.scene() or None), tm.state_names, [],
                  actuated=tm.action_names)
    env = MujocoEnv(scene, make_task(task_name, scene))
    expert = make_expert(scene, env.task)
    dt, ok, times, start = 1.0 / tm.fps, 0, [], time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.episodes):
        env.reset(seed)
        try:
            plan = expert.plan(np.random.default_rng([seed, 1]))
        except IKError as err:
            print(f"seed {seed}: no plan: {err}")  # noqa: T201
            continue
        t = 0.0
        while not env.status.done:
            env.apply_action(plan(t + dt), dt)
            t += dt
        status = env.status
        ok += status.success
        times.append(status.time_s)
        if not status.success:
            print(f"seed {seed}: {status.reason} after {status.time_s:.2f} s, {status.info}")  # noqa: T201
    print(f"{args.robot} {task_name}: {ok}/{args.episodes} seeds succeeded; episode "  # noqa: T201
          f"{np.mean(times):.2f} s of sim time on average; {time.perf_counter() - start:.1f} s "
          f"wall")
    return 0 if ok == args.episodes else 1


if __name__ == "__main__":
    sys.exit(main())
