#!/bin/bash
# Source ROS and the workspace, then launch the node; arguments are launch arguments
# (name:=value), e.g. device:=cuda:0 params_file:=/config/robot.yaml.
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /ws/install/setup.bash
exec ros2 launch segllm_ros segllm.launch.py "$@"
