# segllm_ros on an x86_64 robot computer with an NVIDIA GPU (ROS 2 Kilted, Ubuntu 24.04).
#   docker build -f docker/x86-cuda.Dockerfile -t segllm_ros:cuda .
#   docker run --rm -it --gpus all --network host -v /path/to/checkpoints:/models \
#     segllm_ros:cuda device:=cuda:0 model_path:=/models/segllm-7b precision:=bf16
# PyTorch's Linux wheels from PyPI carry their CUDA libraries, so the base is the plain ROS
# image; the host needs the NVIDIA driver and container toolkit (--gpus). TensorRT is optional:
# build with --build-arg TENSORRT=tensorrt-cu12 (NVIDIA's pip package) for backend:=tensorrt.
ARG ROS_DISTRO=kilted
FROM ros:${ROS_DISTRO}-ros-base

ARG TENSORRT=""
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip python3-colcon-common-extensions \
 && rm -rf /var/lib/apt/lists/*

# The package's ROS and system dependencies (package.xml) from apt; torch and transformers
# from pip (requirements.txt: a CUDA torch, not Ubuntu's CPU python3-torch), never the dev file.
WORKDIR /ws
COPY package.xml src/segllm_ros/package.xml
RUN apt-get update \
 && (rosdep init || true) && rosdep update --rosdistro "${ROS_DISTRO}" \
 && rosdep install --from-paths src --ignore-src -y --rosdistro "${ROS_DISTRO}" \
      --skip-keys "python3-torch python3-transformers-pip" \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt src/segllm_ros/requirements.txt
RUN pip3 install -r src/segllm_ros/requirements.txt ${TENSORRT}

COPY . src/segllm_ros
RUN . "/opt/ros/${ROS_DISTRO}/setup.bash" \
 && colcon build --packages-select segllm_ros --cmake-args -DBUILD_TESTING=OFF \
 && rm -rf build log

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["device:=cuda:0"]
