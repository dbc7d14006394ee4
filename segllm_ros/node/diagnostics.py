"""The node's health as ``diagnostic_msgs/DiagnosticArray`` (published on ``/diagnostics``
at 1 Hz), so that ``rqt_robot_monitor`` or an aggregator sees queue depth, latency, backend,
memory and lifecycle state without calling the node."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


class LatencyStats:
    """Last and mean end-to-end latency of answered queries (thread-safe: the worker writes,
    the diagnostics timer reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.last_ms = 0.0
        self._total_ms = 0.0

    def add(self, latency_ms: float) -> None:
        with self._lock:
            self.count += 1
            self.last_ms = latency_ms
            self._total_ms += latency_ms

    @property
    def mean_ms(self) -> float:
        with self._lock:
            return self._total_ms / self.count if self.count else 0.0


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Health:
    """What the node knows about itself at one moment."""

    lifecycle_state: str
    backend: str
    device: str
    queue_depth: int
    queue_size: int
    latency: LatencyStats


def diagnostic_array(name: str, health: Health, stamp: Time) -> DiagnosticArray:
    """One status: OK while active with room in the queue, WARN when the queue is full or the
    node does not take work (not active)."""
    if health.lifecycle_state != "active":
        level, message = DiagnosticStatus.WARN, f"not active ({health.lifecycle_state})"
    elif health.queue_size and health.queue_depth >= health.queue_size:
        level, message = DiagnosticStatus.WARN, "query queue full"
    else:
        level, message = DiagnosticStatus.OK, "serving"
    values = {
        "lifecycle_state": health.lifecycle_state,
        "queue_depth": str(health.queue_depth),
        "queue_size": str(health.queue_size),
        "answered": str(health.latency.count),
        "latency_last_ms": f"{health.latency.last_ms:.1f}",
        "latency_mean_ms": f"{health.latency.mean_ms:.1f}",
        "backend": health.backend,
        "device": health.device,
        "rss_mb": f"{rss_mb():.1f}",
    }
    values.update(_cuda_memory(health.device))
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=health.device,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def _cuda_memory(device: str) -> dict[str, str]:
    if not device.startswith("cuda"):
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "cuda_allocated_mb": f"{torch.cuda.memory_allocated(device) / 2**20:.1f}",
        "cuda_reserved_mb": f"{torch.cuda.memory_reserved(device) / 2**20:.1f}",
    }
