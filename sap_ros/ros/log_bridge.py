"""Python ``logging`` records of the ROS-free core to a node's ROS logger."""
from __future__ import annotations

import logging


class RosLogHandler(logging.Handler):
    """Python ``logging`` records of ``sap_ros.*`` (the ROS-free core) to the node's ROS logger.

    The core logs with the standard library (e.g. object ids exhausted); without this the lines
    would reach stderr unformatted and never ``/rosout``. What passes the ``sap_ros`` logger's
    level (WARNING unless the application lowers it) is forwarded.
    """

    def __init__(self, ros_logger) -> None:
        """Forward to ``ros_logger`` (``node.get_logger()``)."""
        super().__init__()
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        """One ROS log line per record, at the nearest ROS severity."""
        try:
            text = f'[{record.name}] {record.getMessage()}'
            if record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            else:
                self._ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)
