"""End-to-end demo: the real node, a fake camera and a scripted operator, over ROS 2 topics.

``python -m segllm_ros.demo --out demo_out [--model DIR]`` (``make demo``). One module per
concern: ``scenes`` (the bundled frames, their ground truth and the scripted rounds),
``nodes`` (the camera and operator client nodes), ``report`` (the table and the overlays),
``main`` (starting the node, running the conversations, the exit status).
"""
