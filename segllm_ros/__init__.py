"""segllm_ros: multi-round reasoning segmentation (SegLLM) for ROS 2.

The rosidl-generated interfaces (``segllm_ros.msg``, ``.srv``, ``.action``) are installed
into the same package name; ``extend_path`` lets a source checkout on ``sys.path`` and the
installed interfaces be imported together.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
