"""MuJoCo bridge on sim time, with the recorder and the policy node on demand.

    ros2 launch snapflow_ros sim.launch.py                          # bridge only, real time
    ros2 launch snapflow_ros sim.launch.py policy_path:=/path/to/snapflow_checkpoint \
        mode:=lockstep                                              # closed-loop evaluation
    ros2 launch snapflow_ros sim.launch.py record:=true bag_dir:=demos  # one bag per episode

The bridge publishes /clock and must not use sim time itself; the policy node and the
recorder always run with use_sim_time:=true (no argument: anything else would break them).
policy.launch.py is included in a group that hands it exactly the arguments below and hides
its own (``--show-args`` lists only these; the bridge's ``params_file`` is not the policy's).
In lockstep mode the bridge runs at most ``lockstep_lead_s`` of sim time past the end of the
newest action chunk and then waits, so a slow policy slows the simulation down instead of
falling behind it. Reset an episode with
``ros2 service call /mujoco_bridge/reset std_srvs/srv/Trigger`` (seed: the ``seed`` parameter).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, LogInfo
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("snapflow_ros")
    policy_launch = os.path.join(share, "launch", "policy.launch.py")
    args = [
        DeclareLaunchArgument("params_file", default_value=f"{share}/config/mujoco_bridge.yaml",
                              description="mujoco_bridge parameters YAML"),
        DeclareLaunchArgument("scene", default_value="",
                              description="MJCF scene (empty: the packaged two-target arm)"),
        DeclareLaunchArgument("task", default_value="",
                              description="empty: the packaged scene's reach task, none on your "
                                          "scene; or reach_two_fixed_targets, none, module:Class"),
        DeclareLaunchArgument("topic_map", default_value="",
                              description="topic map YAML shared by all nodes (empty: packaged)"),
        DeclareLaunchArgument("mode", default_value="realtime",
                              description="realtime, lockstep (policy evaluation) or free"),
        DeclareLaunchArgument("seed", default_value="0",
                              description="seed of the first episode (-1: random)"),
        DeclareLaunchArgument("policy_path", default_value="",
                              description="policy checkpoint; empty: start no policy node"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="policy node device: auto (cuda when present), cpu, "
                                          "cuda, cuda:N"),
        DeclareLaunchArgument("policy_params_file", default_value=f"{share}/config/policy.yaml",
                              description="policy_node parameters YAML"),
        DeclareLaunchArgument("record", default_value="false",
                              description="true: also record one bag per episode (record)"),
        DeclareLaunchArgument("bag_dir", default_value="recordings",
                              description="record:=true: folder of the episode bags"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of all nodes and their relative topics"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error"),
    ]
    topic_map = ParameterValue(LaunchConfiguration("topic_map"), value_type=str)
    bridge = Node(
        package="snapflow_ros",
        executable="mujoco_bridge",
        name="mujoco_bridge",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "scene": ParameterValue(LaunchConfiguration("scene"), value_type=str),
                "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                "topic_map": topic_map,
                "mode": ParameterValue(LaunchConfiguration("mode"), value_type=str),
                "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    recorder = Node(
        package="snapflow_ros",
        executable="record",
        name="record",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[{
            "use_sim_time": True,
            "topic_map": topic_map,
            "output_dir": ParameterValue(LaunchConfiguration("bag_dir"), value_type=str),
            "episode_topic": "episode/active",  # the bridge: true from reset to episode end
            "autostart": True,  # the first episode began before the recorder listened
        }],
        condition=IfCondition(LaunchConfiguration("record")),
    )
    actions = [*args, bridge, recorder]
    with_policy = IfCondition(PythonExpression(["'", LaunchConfiguration("policy_path"),
                                                "' != ''"]))
    if os.path.exists(policy_launch):
        # forwarding=False: the included file sees only these values, not this file's
        # configurations (its params_file is not the bridge's), and its own arguments stay out
        # of this file's --show-args
        actions.append(GroupAction(
            [IncludeLaunchDescription(PythonLaunchDescriptionSource(policy_launch))],
            forwarding=False,
            launch_configurations={
                "policy_path": LaunchConfiguration("policy_path"),
                "params_file": LaunchConfiguration("policy_params_file"),
                "topic_map": LaunchConfiguration("topic_map"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": "true",  # the bridge is the clock
                "namespace": LaunchConfiguration("namespace"),
                "log_level": LaunchConfiguration("log_level"),
            },
            condition=with_policy,
        ))
    else:
        actions.append(LogInfo(msg=f"{policy_launch} not installed: no policy node",
                               condition=with_policy))
    return LaunchDescription(actions)
