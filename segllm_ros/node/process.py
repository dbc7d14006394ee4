"""Start and stop ``segllm_node`` as its own process, the way a launch file does.

Used by the demo and the tests, which must exercise the real entry point over DDS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def start_node_process(
    model_path: Path | str,
    log_path: Path,
    env: dict[str, str] | None = None,
    namespace: str | None = None,
    autostart: bool = True,
    **params: Any,
) -> subprocess.Popen:
    """``python -m segllm_ros.node --ros-args [-r __ns:=NS] -p model_path:=... -p k:=v ...``.

    The node gets its own session (only we signal it) and this checkout's ``segllm_ros`` on
    its path. ``env`` must carry the ROS network variables (LOCALHOST, domain id).
    ``autostart=False`` leaves the node unconfigured for a lifecycle manager to drive."""
    env = dict(os.environ if env is None else env)
    src_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "segllm_ros.node"]
    if not autostart:
        cmd.append("--no-autostart")
    cmd += ["--ros-args", "-p", f"model_path:={model_path}"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop_node_process(proc: subprocess.Popen) -> int | None:
    """SIGINT (clean lifecycle shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait_s in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()
