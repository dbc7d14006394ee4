"""End-to-end demo: the real node, a fake camera and a scripted operator, over ROS 2 topics.

Why a subprocess and real topics: the demo must show what a user will run (``segllm_node``
with its parameters, DDS in between), not an in-process shortcut. The camera and the operator
live in this process, spun by one executor in a background thread, so the script reads as a
plain sequence of operator turns.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segllm_ros.interface.image_codec import fill_image_msg, image_from_msg
from segllm_ros.interface.mask_codec import mask_iou, overlay, resize_mask, rle_to_mask
from segllm_ros.node.process import start_node_process, stop_node_process
from segllm_ros.paths import default_model_path, find_share_file

MODEL_ENV = "SEGLLM_DEMO_MODEL"
"""Overrides the default model (e.g. a checkpoint still being trained)."""
SCALE = 3
"""Overlay upscaling (nearest): the demo frames are only 128 px."""
CAMERA_HZ = 10.0
NS = "/segllm"


class DemoError(RuntimeError):
    """A failure the demo reports in one line and turns into an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class DemoRound:
    """One scripted turn and what the node answered (one row of the table / summary)."""

    conversation: str
    scripted_round: int
    request_id: str
    query: str
    ref_rounds_sent: list[int]
    target: int
    target_name: str
    round_index: int = 0
    ref_rounds: list[int] | None = None
    status: int = -1
    status_name: str = "TIMEOUT"
    message: str = ""
    found: bool = False
    score: float = 0.0
    iou: float = 0.0
    latency_ms: float = 0.0
    queue_ms: float = 0.0
    model_ms: float = 0.0
    frame_stamp_ns: int = 0
    overlay: str = ""


# --------------------------------------------------------------------------- setup


def setup_ros_env() -> dict[str, str]:
    """Loopback-only DDS on a random domain, set here so no caller can forget it."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(100, 199))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return dict(os.environ)


def resolve_model(arg: str | None) -> Path:
    """``--model``, else ``$SEGLLM_DEMO_MODEL``, else the bundled demo checkpoint."""
    try:
        path = Path(arg or os.environ.get(MODEL_ENV) or default_model_path())
    except FileNotFoundError as exc:
        raise DemoError(f"no model: {exc}; pass --model DIR or set {MODEL_ENV}", 2) from exc
    if not (path / "config.json").is_file():
        raise DemoError(f"model folder {path} has no config.json", 2)
    return path.resolve()


def load_demo_data(data_dir: Path) -> list[dict[str, Any]]:
    """Scenes with their RGB image, ground-truth masks and scripted conversation."""
    try:
        spec = json.loads((data_dir / "demo.json").read_text())
    except (OSError, ValueError) as exc:
        raise DemoError(f"cannot read {data_dir / 'demo.json'}: {exc}", 2) from exc
    scenes = []
    for scene in spec["scenes"]:
        bgr = cv2.imread(str(data_dir / scene["image"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DemoError(f"cannot read {data_dir / scene['image']}", 2)
        scene["rgb"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        scene["masks"] = [rle_to_mask(obj["mask"]) for obj in scene["objects"]]
        scenes.append(scene)
    return scenes


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------- ROS nodes


def make_nodes() -> tuple[Any, Any]:
    """Build the camera and operator nodes (rclpy imported only after the env is set)."""
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from segllm_ros.msg import SegmentationQuery, SegmentationResult
    from segllm_ros.srv import ResetConversation

    class Camera(Node):
        """Publishes the current scene at 10 Hz, stamped now, like a live camera would."""

        def __init__(self) -> None:
            super().__init__("demo_camera")
            self.pub = self.create_publisher(Image, f"{NS}/image", qos_profile_sensor_data)
            self._lock = threading.Lock()
            self._msg: Image | None = None
            self.sent_since_switch = 0
            self.first_stamp_ns = 0  # stamp of the first frame of the current scene
            self.create_timer(1.0 / CAMERA_HZ, self._tick)

        def show(self, rgb: np.ndarray) -> None:
            msg = fill_image_msg(Image(), rgb, "rgb8")
            msg.header.frame_id = "camera"
            with self._lock:
                self._msg, self.sent_since_switch, self.first_stamp_ns = msg, 0, 0

        def _tick(self) -> None:
            with self._lock:
                if self._msg is None:
                    return
                now = self.get_clock().now()
                self._msg.header.stamp = now.to_msg()
                self.first_stamp_ns = self.first_stamp_ns or now.nanoseconds
                self.pub.publish(self._msg)
                if self.pub.get_subscription_count() > 0:
                    self.sent_since_switch += 1

    class Operator(Node):
        """Sends queries, collects results by request id, resets conversations."""

        def __init__(self) -> None:
            super().__init__("demo_operator")
            self.query_pub = self.create_publisher(SegmentationQuery, f"{NS}/query", 10)
            self.result_sub = self.create_subscription(
                SegmentationResult, f"{NS}/result", self._on_result, 10)
            self.reset_client = self.create_client(ResetConversation, f"{NS}/reset")
            self._results: dict[tuple[str, str], SegmentationResult] = {}
            self._cond = threading.Condition()

        def _on_result(self, msg: SegmentationResult) -> None:
            with self._cond:
                self._results[(msg.conversation_id, msg.request_id)] = msg
                self._cond.notify_all()

        def ask(self, cid: str, rid: str, text: str, refs: list[int],
                timeout: float) -> SegmentationResult | None:
            msg = SegmentationQuery(conversation_id=cid, request_id=rid, text=text,
                                    ref_rounds=list(refs),
                                    image_policy=SegmentationQuery.IMAGE_LATEST)
            msg.header.stamp = self.get_clock().now().to_msg()
            key = (cid, rid)
            with self._cond:
                self._results.pop(key, None)
                self.query_pub.publish(msg)
                self._cond.wait_for(lambda: key in self._results, timeout)
                return self._results.pop(key, None)

        def reset(self, cid: str, timeout: float) -> Any:
            done = threading.Event()
            future = self.reset_client.call_async(ResetConversation.Request(conversation_id=cid))
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(timeout):
                raise DemoError(f"/segllm/reset did not answer within {timeout:.0f} s", 1)
            return future.result()

    return Camera(), Operator()


def wait_until_ready(proc: subprocess.Popen, camera: Any, operator: Any, timeout: float,
                     log_path: Path) -> float:
    """Block until the node serves reset, has matched every topic and seen a few frames."""
    start = time.monotonic()
    checks = {
        "the /segllm/reset service": lambda: operator.reset_client.service_is_ready(),
        "the node's image subscription": lambda: camera.pub.get_subscription_count() > 0,
        "the node's query subscription": lambda: operator.query_pub.get_subscription_count() > 0,
        "the node's result publisher": lambda: operator.result_sub.get_publisher_count() > 0,
        "3 camera frames": lambda: camera.sent_since_switch >= 3,
    }
    for what, ready in checks.items():
        while not ready():
            # A failed configure leaves the node spinning with no interfaces: fail fast.
            if "cannot load the model" in log_tail(log_path, 50):
                raise DemoError(f"the node could not load the model; {log_path} ends with:\n"
                                f"{log_tail(log_path)}", 2)
            if proc.poll() is not None:
                raise DemoError(f"the node exited with status {proc.returncode} before "
                                f"{what} was up; {log_path} ends with:\n{log_tail(log_path)}", 2)
            if time.monotonic() - start > timeout:
                raise DemoError(f"the node did not start within {timeout:.0f} s (waiting for "
                                f"{what}); {log_path} ends with:\n{log_tail(log_path)}", 2)
            time.sleep(0.05)
    return time.monotonic() - start


# ---------------------------------------------------------------------- reporting


def result_mask(result: Any, shape: tuple[int, int]) -> np.ndarray:
    """The result's mono8 mask as bool at the scene's size; empty when there is none."""
    if result is None or result.mask.height == 0 or result.mask.width == 0:
        return np.zeros(shape, dtype=bool)
    mask = image_from_msg(result.mask)[:, :, 0] > 127
    return mask if mask.shape == shape else resize_mask(mask, *shape)


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width_px:
            lines.append(line)
            trial = word
        line = trial
    return [*lines, line]


def render_overlay(rgb: np.ndarray, mask: np.ndarray, gt: np.ndarray, rec: DemoRound) -> np.ndarray:
    """Upscaled overlay with the query as a caption; white outline = ground truth."""
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, (w * SCALE, h * SCALE), interpolation=cv2.INTER_NEAREST)
    image = overlay(big, [resize_mask(mask, h * SCALE, w * SCALE)],
                    labels=[f"round {rec.round_index or rec.scripted_round}"])
    contours, _ = cv2.findContours(resize_mask(gt, h * SCALE, w * SCALE).astype(np.uint8),
                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (255, 255, 255), 1, lineType=cv2.LINE_AA)
    scale, line_h = 0.45, 18
    lines = _wrap(f"{rec.conversation} round {rec.scripted_round}: {rec.query}",
                  image.shape[1] - 8, scale)
    lines.append(f"refs {rec.ref_rounds}  {rec.status_name}  IoU {rec.iou:.2f}  "
                 "(white = ground truth)")
    band = np.full((line_h * len(lines) + 6, image.shape[1], 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, image])


def print_table(rounds: list[DemoRound]) -> float:
    """The per-round table; returns the mean IoU (timed-out rounds count as 0)."""
    qw = max([len(r.query) for r in rounds] + [5])
    print(f"\n{'conv':<7} {'round':>5}  {'query':<{qw}}  {'refs':<7} {'status':<10} "
          f"{'IoU':>5} {'latency_ms':>10}")
    print("-" * (qw + 53))
    for r in rounds:
        refs = ",".join(map(str, r.ref_rounds)) if r.ref_rounds else "-"
        print(f"{r.conversation:<7} {r.round_index or r.scripted_round:>5}  {r.query:<{qw}}  "
              f"{refs:<7} {r.status_name:<10} {r.iou:>5.2f} {r.latency_ms:>10.1f}")
    mean = float(np.mean([r.iou for r in rounds])) if rounds else 0.0
    print(f"mean IoU over {len(rounds)} rounds: {mean:.3f}\n")
    return mean


# --------------------------------------------------------------------------- main


def run_conversations(scenes: list[dict[str, Any]], camera: Any, operator: Any, out: Path,
                      round_timeout: float, status_names: dict[int, str],
                      records: list[DemoRound], summary: dict[str, Any]) -> None:
    """Each scene's scripted rounds in order; a reset before every conversation but the first."""
    previous = ""
    for scene in scenes:
        conv = scene["conversation"]
        cid = conv["id"]
        if conv.get("reset_before") and previous:
            resp = operator.reset(previous, round_timeout)
            print(f"reset {previous!r}: success={resp.success} cleared={resp.cleared} "
                  f"message={resp.message!r}")
            summary["resets"].append({"conversation_id": previous, "success": resp.success,
                                      "cleared": resp.cleared, "message": resp.message})
        if previous:  # main() already shows the first scene
            camera.show(scene["rgb"])
            print(f"camera now shows {scene['name']}")
            deadline = time.monotonic() + 10.0
            while camera.sent_since_switch < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        strip: list[np.ndarray] = []
        for spec in conv["rounds"]:
            k = spec["round"]
            rec = DemoRound(cid, k, f"r{k}", spec["query"], list(spec["ref_rounds"]),
                            spec["target"], spec["target_name"])
            records.append(rec)
            result = None
            for _attempt in range(3):  # NO_IMAGE creates no round: asking again is safe
                result = operator.ask(cid, rec.request_id, rec.query, rec.ref_rounds_sent,
                                      round_timeout)
                if result is None or result.status != result.STATUS_NO_IMAGE:
                    break
                time.sleep(0.5)
            if result is None:
                raise DemoError(f"{cid} round {k}: no result within {round_timeout:g} s "
                                f"for {rec.query!r}", 1)
            rec.round_index, rec.ref_rounds = result.round_index, list(result.ref_rounds)
            rec.status = int(result.status)
            rec.status_name = status_names.get(rec.status, str(rec.status))
            rec.message, rec.found, rec.score = result.message, result.found, result.score
            rec.latency_ms, rec.queue_ms, rec.model_ms = (
                result.latency_ms, result.queue_ms, result.model_ms)
            rec.frame_stamp_ns = result.header.stamp.sec * 10**9 + result.header.stamp.nanosec
            if 0 < rec.frame_stamp_ns < camera.first_stamp_ns:
                print(f"  warning: {cid} round {k} was answered on a frame of the previous scene")
            gt = scene["masks"][rec.target]
            mask = result_mask(result, gt.shape)
            rec.iou = mask_iou(mask, gt)
            path = out / f"{cid}_round{k}.png"
            image = render_overlay(scene["rgb"], mask, gt, rec)
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            strip.append(image)
            rec.overlay = path.name
            print(f"  {cid} round {rec.round_index}: {rec.query!r} -> {rec.status_name} "
                  f"IoU {rec.iou:.2f} ({rec.latency_ms:.0f} ms)"
                  + (f" [{rec.message}]" if rec.message else ""))
        write_strip(out / f"{cid}.png", strip)
        previous = cid


def write_strip(path: Path, images: list[np.ndarray]) -> None:
    """All rounds of a conversation side by side (the README picture)."""
    height = max(im.shape[0] for im in images)
    padded = [cv2.copyMakeBorder(im, 0, height - im.shape[0], 0, 4, cv2.BORDER_CONSTANT,
                                 value=(255, 255, 255)) for im in images]
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack(padded), cv2.COLOR_RGB2BGR))


def _on_sigterm(signum: int, frame: Any) -> None:
    raise DemoError("terminated (SIGTERM)", 128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segllm_ros.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--model", default=None,
                        help=f"checkpoint folder (default: ${MODEL_ENV} or models/demo)")
    parser.add_argument("--data", type=Path, default=None,
                        help="demo data folder (default: the bundled data/demo)")
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
        print(f"model {model}\ndata {data_dir}\nROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
              f"(localhost only); node log: {log_path}")

        proc = start_node_process(model, log_path, env, max_image_age=0.0)
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        from segllm_ros.msg import SegmentationResult

        status_names = {getattr(SegmentationResult, n): n.removeprefix("STATUS_")
                        for n in dir(SegmentationResult) if n.startswith("STATUS_")}
        rclpy.init()
        camera, operator = make_nodes()
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
        run_conversations(scenes, camera, operator, args.out, args.round_timeout,
                          status_names, records, summary)
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
    summary["runtime_s"] = round(time.monotonic() - t0, 2)
    summary["rounds"] = [asdict(r) for r in records]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"overlays and summary.json in {args.out}; node exit code "
          f"{summary.get('node_exit_code')}; total {summary['runtime_s']:.1f} s")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
