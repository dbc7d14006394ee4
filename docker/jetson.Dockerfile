# segllm_ros on a Jetson (Orin, JetPack 6 = L4T r36, Ubuntu 22.04, aarch64).
#   docker build -f docker/jetson.Dockerfile -t segllm_ros:jetson .
#   docker run --rm -it --runtime nvidia --network host -v /path/to/checkpoints:/models \
#     segllm_ros:jetson device:=cuda:0 model_path:=/models/segllm-7b backend:=tensorrt \
#     precision:=fp16
# CUDA, cuDNN and TensorRT (with its Python bindings) come from the JetPack base image and
# PyTorch from NVIDIA's JetPack build: requirements.txt is installed under a constraint that
# keeps that torch, so pip can never replace it with PyPI's CPU-only aarch64 wheel.
# Ubuntu 22.04 has ROS 2 binary packages up to Humble (Kilted's are for 24.04): the image uses
# ROS_DISTRO=humble from packages.ros.org. README, "On a Jetson", says what was verified.
ARG L4T_TAG=r36.4.0
FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}

ARG ROS_DISTRO=humble
ARG TORCH_INDEX_URL=https://pypi.jetson-ai-lab.io/jp6/cu126
ENV ROS_DISTRO=${ROS_DISTRO} \
    DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ROS 2 from packages.ros.org, plus the tools to build a workspace
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg lsb-release \
 && curl -fsSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key \
      -o /usr/share/keyrings/ros-archive-keyring.gpg \
 && echo "deb [arch=$(dpkg --print-architecture) signed-by=/usr/share/keyrings/ros-archive-keyring.gpg] http://packages.ros.org/ros2/ubuntu $(lsb_release -cs) main" \
      > /etc/apt/sources.list.d/ros2.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ros-${ROS_DISTRO}-ros-base python3-colcon-common-extensions python3-rosdep \
      python3-pip python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/*

# JetPack's PyTorch (NVIDIA's CUDA build for this L4T; only torch from that index), pinned
# for every later pip call; its plain Python dependencies then come from PyPI.
RUN pip3 install --no-deps --index-url "${TORCH_INDEX_URL}" torch \
 && python3 -c "from importlib.metadata import version; print('torch==' + version('torch'))" \
      > /etc/pip-jetpack.txt \
 && python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)"
ENV PIP_CONSTRAINT=/etc/pip-jetpack.txt
RUN pip3 install torch \
 && python3 -c "import torch; assert torch.version.cuda, torch.__version__; print(torch.__version__)"

# The package's ROS and system dependencies (package.xml) from apt; torch is JetPack's, and
# the Python libraries without a rosdep key come from requirements.txt (never the dev file).
WORKDIR /ws
COPY package.xml src/segllm_ros/package.xml
RUN apt-get update \
 && (rosdep init || true) && rosdep update --rosdistro "${ROS_DISTRO}" \
 && rosdep install --from-paths src --ignore-src -y --rosdistro "${ROS_DISTRO}" \
      --skip-keys "python3-torch python3-transformers-pip" \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt src/segllm_ros/requirements.txt
RUN pip3 install -r src/segllm_ros/requirements.txt

COPY . src/segllm_ros
RUN . "/opt/ros/${ROS_DISTRO}/setup.bash" \
 && colcon build --packages-select segllm_ros --cmake-args -DBUILD_TESTING=OFF \
 && rm -rf build log

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["device:=cuda:0"]
