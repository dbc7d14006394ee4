"""ros2 launch segllm_ros segllm.launch.py [params_file:=FILE] [device:=cuda:0] [NAME:=VALUE ...]

Starts the segllm lifecycle node in namespace ``segllm``; it configures and activates itself
unless ``autostart:=false``. ``params_file`` is the configuration: a launch argument such as
``device`` overrides its key only when given (segllm_ros/launch_args.py holds the rules).
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from segllm_ros.launch_args import (
    ARGUMENTS,
    PARAMS_FILE,
    node_arguments,
    parameter_overrides,
    ros_arguments,
)

DEFAULT_PARAMS_FILE = PathJoinSubstitution(
    [FindPackageShare("segllm_ros"), "config", "segllm.yaml"]
)


def _segllm_node(context: LaunchContext) -> list[Node]:
    """Build the node once the launch arguments are known (empty ones are not passed)."""
    given = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {
        name: ParameterValue(value, value_type=type(value))
        for name, value in parameter_overrides(given).items()
    }
    topic = given["image_topic"]
    return [
        Node(
            package="segllm_ros",
            executable="segllm_node",
            name="segllm",
            namespace=given["namespace"],
            parameters=[given[PARAMS_FILE], overrides],
            remappings=[("image", topic), ("image/compressed", f"{topic}/compressed")],
            arguments=node_arguments(given),
            ros_arguments=ros_arguments(given),
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(
            name,
            description=text,
            default_value=DEFAULT_PARAMS_FILE if default is None else default,
        )
        for name, (default, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_segllm_node)])
