"""ros2 launch segllm_ros segllm.launch.py [image_topic:=/camera/image_raw] [model_path:=DIR] ...

Starts the segllm lifecycle node (it configures and activates itself) in namespace ``segllm``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "namespace": ("segllm", "namespace of the node's topics, service and action"),
    "image_topic": ("/camera/image_raw", "camera topic (sensor_msgs/Image)"),
    "image_transport": ("raw", "raw, or compressed to read <image_topic>/compressed"),
    "params_file": (PathJoinSubstitution([FindPackageShare("segllm_ros"), "config",
                                          "segllm.yaml"]), "node parameters (YAML)"),
    "model_path": ("", "SegLLM checkpoint folder; empty = bundled demo model"),
    "backend": ("torch", "inference runtime: torch, onnxruntime or tensorrt"),
    "engine_dir": ("", "ONNX export folder (engines/ inside); empty = <model_path>/onnx"),
    "device": ("cpu", "torch device, e.g. cuda:0"),
    "precision": ("fp32", "torch: fp32/fp16/bf16; onnxruntime: fp32; tensorrt: fp32/fp16/int8"),
    "mode": ("cached", "cached or recompute"),
}


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    overrides = {name: arg(name) for name in ("model_path", "backend", "engine_dir", "device",
                                              "precision", "mode", "image_transport")}
    node = Node(
        package="segllm_ros",
        executable="segllm_node",
        name="segllm",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides],
        remappings=[("image", arg("image_topic")),
                    ("image/compressed", [arg("image_topic"), "/compressed"])],
        output="screen",
        emulate_tty=True,
    )
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, node])
