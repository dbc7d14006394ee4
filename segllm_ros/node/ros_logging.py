"""Forward the engine's and worker's Python ``logging`` records to the node's ROS logger, so
they reach the console and ``/rosout`` with their severity (not only a stderr nobody reads)."""

from __future__ import annotations

import logging

from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.logging import LoggingSeverity

_SEVERITY = {
    logging.DEBUG: LoggingSeverity.DEBUG,
    logging.INFO: LoggingSeverity.INFO,
    logging.WARNING: LoggingSeverity.WARN,
    logging.ERROR: LoggingSeverity.ERROR,
    logging.CRITICAL: LoggingSeverity.FATAL,
}


class RosLogHandler(logging.Handler):
    """A handler that writes each record (with its traceback, if any) to a ROS logger."""

    def __init__(self, ros_logger: RcutilsLogger) -> None:
        super().__init__()
        self.ros_logger = ros_logger
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            severity = _SEVERITY.get(record.levelno, LoggingSeverity.INFO)
            self.ros_logger.log(self.format(record), severity)
        except Exception:
            self.handleError(record)


def forward_python_logs(ros_logger: RcutilsLogger, package: str = "segllm_ros") -> RosLogHandler:
    """Attach a ``RosLogHandler`` to ``package``'s logger, at the ROS logger's level."""
    handler = RosLogHandler(ros_logger)
    py_logger = logging.getLogger(package)
    py_logger.addHandler(handler)
    level = int(ros_logger.get_effective_level())
    py_logger.setLevel(
        next((py for py, ros in _SEVERITY.items() if int(ros) >= level), logging.INFO)
    )
    return handler
