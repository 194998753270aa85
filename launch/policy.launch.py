"""Start the SnapFlow policy node.

    ros2 launch snapflow_ros policy.launch.py policy_path:=/path/to/snapflow_checkpoint
    ros2 launch snapflow_ros policy.launch.py policy_path:=... device:=cpu namespace:=robot1 \
        use_sim_time:=true log_level:=debug

Parameters come from ``params_file`` (default: the packaged config/policy.yaml); the
arguments below override it. The node configures and activates itself (``autostart``).
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("snapflow_ros")
    args = [
        DeclareLaunchArgument("policy_path", default_value="",
                              description="SnapFlow checkpoint dir, LeRobot policy dir or hub id"),
        DeclareLaunchArgument("params_file", default_value=f"{share}/config/policy.yaml",
                              description="policy_node parameters YAML"),
        DeclareLaunchArgument("topic_map", default_value="",
                              description="topic map YAML (empty: the packaged one)"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="auto (cuda when present), cpu, cuda, cuda:N"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true with the MuJoCo bridge)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace for the node and its relative topics"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error"),
    ]
    node = Node(
        package="snapflow_ros",
        executable="policy_node",
        name="policy_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {  # typed: a value that reads as YAML (policy_path:=2024) stays a string
                "policy_path": ParameterValue(LaunchConfiguration("policy_path"), value_type=str),
                "topic_map": ParameterValue(LaunchConfiguration("topic_map"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"),
                                               value_type=bool),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*args, node])
