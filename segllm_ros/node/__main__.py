"""``segllm_node`` / ``python -m segllm_ros.node``: start the node (configure + activate)."""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="segllm_node", description=__doc__)
    parser.add_argument(
        "--no-autostart",
        action="store_true",
        help="stay unconfigured; drive the lifecycle from outside",
    )
    args, _ = parser.parse_known_args(rclpy.utilities.remove_ros_args(argv)[1:])
    node = executor = None
    try:
        rclpy.init(args=argv)
        from segllm_ros.node.segllm_node import SegLLMNode

        node = SegLLMNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        if not args.no_autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit("segllm_node: configure failed (see the error above)")
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit("segllm_node: activate failed (see the error above)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            if node.worker is not None:
                node.worker.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
