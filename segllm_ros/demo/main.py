"""The demo's script: start ``segllm_node`` as a subprocess, talk to it over real topics.

Why a subprocess and real topics: the demo must show what a user will run (``segllm_node``
with its parameters, DDS in between), not an in-process shortcut. The camera and the operator
(``nodes``) live in this process, spun by one executor in a background thread, so the script
reads as a plain sequence of operator turns.

Run: ``python -m segllm_ros.demo --out demo_out [--model DIR]``. The model defaults to
``$SEGLLM_DEMO_MODEL`` if set, else the bundled ``models/demo``. DDS stays on loopback with a
random domain id in 100..199, so parallel runs and other machines never see each other.
Exit status: 0 when every round got a result, 1 when a round timed out, 2 when the node (or
its model / the demo data) could not be started.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from segllm_ros.demo.report import (
    answer_iou,
    print_table,
    render_overlay,
    result_masks,
    write_figure,
    write_strip,
)
from segllm_ros.demo.scenes import MODEL_ENV, DemoError, DemoRound, load_demo_data, resolve_model
from segllm_ros.node.process import start_node_process, stop_node_process
from segllm_ros.paths import find_share_file

if TYPE_CHECKING:
    from segllm_ros.demo.nodes import Camera, Operator


def setup_ros_env() -> dict[str, str]:
    """Loopback-only DDS on a random domain, set here so no caller can forget it."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(100, 199))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return dict(os.environ)


def run_conversations(
    scenes: list[dict[str, Any]],
    camera: Camera,
    operator: Operator,
    out: Path,
    round_timeout: float,
    status_names: dict[int, str],
    records: list[DemoRound],
    summary: dict[str, Any],
) -> None:
    """Each scene's scripted rounds in order; a reset before every conversation but the first.
    Writes one overlay per round, a strip per conversation and ``figure.png`` (all strips)."""
    previous = ""
    strips: list[list[np.ndarray]] = []
    for scene in scenes:
        conv = scene["conversation"]
        cid = conv["id"]
        if conv.get("reset_before") and previous:
            resp = operator.reset(previous, round_timeout)
            print(
                f"reset {previous!r}: success={resp.success} cleared={resp.cleared} "
                f"message={resp.message!r}"
            )
            summary["resets"].append(
                {
                    "conversation_id": previous,
                    "success": resp.success,
                    "cleared": resp.cleared,
                    "message": resp.message,
                }
            )
        if previous:  # main() already shows the first scene
            camera.show(scene["rgb"])
            print(f"camera now shows {scene['name']}")
            deadline = time.monotonic() + 10.0
            while camera.sent_since_switch < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        strip: list[np.ndarray] = []
        for spec in conv["rounds"]:
            k = spec["round"]
            rec = DemoRound(
                cid,
                k,
                f"r{k}",
                spec["query"],
                list(spec["ref_rounds"]),
                spec["target"],
                spec["target_name"],
                spec.get("answer", "one"),
                list(spec.get("targets", [spec["target"]])),
            )
            records.append(rec)
            result = None
            for _attempt in range(3):  # NO_IMAGE creates no round: asking again is safe
                result = operator.ask(
                    cid, rec.request_id, rec.query, rec.ref_rounds_sent, round_timeout
                )
                if result is None or result.status != result.STATUS_NO_IMAGE:
                    break
                time.sleep(0.5)
            if result is None:
                raise DemoError(
                    f"{cid} round {k}: no result within {round_timeout:g} s for {rec.query!r}", 1
                )
            rec.round_index, rec.ref_rounds = result.round_index, list(result.ref_rounds)
            rec.status = int(result.status)
            rec.status_name = status_names.get(rec.status, str(rec.status))
            rec.message, rec.found, rec.score = result.message, result.found, result.score
            rec.latency_ms, rec.queue_ms, rec.model_ms = (
                result.latency_ms,
                result.queue_ms,
                result.model_ms,
            )
            rec.frame_stamp_ns = result.header.stamp.sec * 10**9 + result.header.stamp.nanosec
            if 0 < rec.frame_stamp_ns < camera.first_stamp_ns:
                print(f"  warning: {cid} round {k} was answered on a frame of the previous scene")
            truths = [scene["masks"][i] for i in rec.targets]
            shape = scene["masks"][0].shape
            masks = result_masks(result, shape)
            rec.kind, rec.segments = result.answer_kind, len(masks)
            not_found = rec.status == result.STATUS_NOT_FOUND
            rec.iou = answer_iou(rec.expected_kind, masks, truths, shape, not_found)
            path = out / f"{cid}_round{k}.png"
            image = render_overlay(scene["rgb"], masks, truths, rec)
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            strip.append(image)
            rec.overlay = path.name
            print(
                f"  {cid} round {rec.round_index}: {rec.query!r} -> {rec.status_name} "
                f"IoU {rec.iou:.2f} ({rec.latency_ms:.0f} ms)"
                + (f" [{rec.message}]" if rec.message else "")
            )
        write_strip(out / f"{cid}.png", strip)
        strips.append(strip)
        write_figure(out / "figure.png", strips)
        previous = cid


def _on_sigterm(signum: int, frame: Any) -> None:
    raise DemoError("terminated (SIGTERM)", 128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segllm_ros.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument(
        "--model", default=None, help=f"checkpoint folder (default: ${MODEL_ENV} or models/demo)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="demo data folder (default: the bundled data/demo)"
    )
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--round-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    env = setup_ros_env()
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "node.log"
    records: list[DemoRound] = []
    summary: dict[str, Any] = {"ok": False, "error": "", "resets": []}
    proc: subprocess.Popen | None = None
    rclpy = executor = spin_thread = None
    nodes: list[Any] = []
    # SIGTERM (e.g. a CI timeout) must still stop the node subprocess: go through `finally`.
    signal.signal(signal.SIGTERM, _on_sigterm)
    exit_code = 0
    try:
        model = resolve_model(args.model)
        try:
            data_dir = args.data or find_share_file("data/demo")
        except FileNotFoundError as exc:
            raise DemoError(f"no demo data: {exc}", 2) from exc
        scenes = load_demo_data(data_dir)
        summary.update(model=str(model), data=str(data_dir), domain_id=int(env["ROS_DOMAIN_ID"]))
        print(
            f"model {model}\ndata {data_dir}\nROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
            f"(localhost only); node log: {log_path}"
        )

        proc = start_node_process(model, log_path, env, max_image_age=0.0)
        import rclpy  # the ROS modules only after setup_ros_env
        from rclpy.executors import MultiThreadedExecutor

        from segllm_ros.demo.nodes import Camera, Operator, wait_until_ready
        from segllm_ros.msg import SegmentationResult

        status_names = {
            getattr(SegmentationResult, n): n.removeprefix("STATUS_")
            for n in dir(SegmentationResult)
            if n.startswith("STATUS_")
        }
        rclpy.init()
        camera, operator = Camera(), Operator()
        nodes = [camera, operator]
        executor = MultiThreadedExecutor(num_threads=2)
        for node in nodes:
            executor.add_node(node)
        spin_thread = threading.Thread(target=executor.spin, name="demo-spin", daemon=True)
        spin_thread.start()
        camera.show(scenes[0]["rgb"])
        ready_s = wait_until_ready(proc, camera, operator, args.startup_timeout, log_path)
        print(f"node up after {ready_s:.1f} s (pid {proc.pid})")
        summary["node_ready_s"] = round(ready_s, 2)
        run_conversations(
            scenes, camera, operator, args.out, args.round_timeout, status_names, records, summary
        )
        summary["ok"] = True
    except KeyboardInterrupt:
        print("\nDEMO INTERRUPTED: stopping the node", file=sys.stderr)
        summary["error"], exit_code = "interrupted", 130
    except DemoError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        summary["error"], exit_code = str(exc), exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup below is bounded (~20 s)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        for node in nodes:
            node.destroy_node()
        if rclpy is not None and rclpy.ok():
            rclpy.shutdown()
        if proc is not None:
            summary["node_exit_code"] = stop_node_process(proc)

    summary["mean_iou"] = print_table(records) if records else 0.0
    summary["kinds_as_expected"] = sum(r.kind == r.expected_kind for r in records)
    summary["runtime_s"] = round(time.monotonic() - t0, 2)
    summary["rounds"] = [asdict(r) for r in records]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"overlays and summary.json in {args.out}; node exit code "
        f"{summary.get('node_exit_code')}; total {summary['runtime_s']:.1f} s"
    )
    return exit_code
