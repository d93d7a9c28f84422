# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception demo`: the segmentation node on real camera frames, end to end over DDS.

1. writes the bundled CamVid frames (`sample_data/camvid_val`; or the IDD-Lite ones,
   `sample_data/idd_lite`) into a rosbag2 (mcap)
   with `make_bag`: camera images, camera info and ground-truth labels;
2. starts `segmentation_node` as its own process, the way launch does
   (`python -m seg_perception.ros.node --ros-args --params-file config/drive.yaml -r ...`);
3. replays the bag's images to it over DDS with the `Replayer` of `seg-perception replay`,
   and receives its `segmentation/labels` and `segmentation/overlay` outputs;
4. writes the overlays (PNG), the label images (PNG), a side-by-side video
   (camera | ground truth | node overlay | bird's-eye view of `segmentation/grid`) and
   `summary.json` to the output folder, and prints frames/s, latency p50/p95,
   received/dropped frames, mIoU / pixel accuracy against the bag's ground truth and
   the free distance ahead.

The bag's CameraInfo carries a stated calibration of the bundled frames' camera
(config/cameras/, an assumption: these datasets come without one), and the node gets
the camera's pose from it, so its geometric outputs are real.

The demo's DDS traffic stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST),
on the user's ROS_DOMAIN_ID or, when none is set, one picked here; the node runs in
its own namespace, so it does not meet a stack running on the same domain.
By default each frame goes out once the node has answered the previous one
(so every frame is segmented, whatever the machine); `--realtime` replays at the
bag's recorded rate like a live camera, and a slow machine then drops frames.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..classes import ClassTable
from ..ros.environment import ros_environment

DEMO_NAMESPACE = "/seg_perception_demo"
BAG_IMAGE_TOPIC = "/camera/image_raw"
BAG_LABEL_TOPIC = "/camera/ground_truth"
BAG_INFO_TOPIC = "/camera/camera_info"
DEFAULT_OUTPUT = "demo_output"
#: What the demo writes into its output folder (and removes there before a new run).
OUTPUT_ITEMS = ("bag", "overlay", "labels", "side_by_side", "demo.mp4", "demo.gif", "summary.json", "node.log")
WARMUP_STAMP_NS = 1  # the warm-up frame's header stamp; the bag's frames are stamped "now"


class DemoError(RuntimeError):
    """Something that stops the demo, said in one line."""


# -- finding things -------------------------------------------------------------

def _repo_root() -> Path:
    """The folder above the package: the repository root for a checkout or an editable install."""
    return Path(__file__).resolve().parents[2]


#: The bundled frame sets: folder under sample_data/ and the name the demo gives them.
SAMPLE_SETS = {"camvid": ("camvid_val", "CamVid"), "idd_lite": ("idd_lite", "IDD-Lite")}
#: The corridor the demo measures the free distance in (free_space_monitor's default width).
CORRIDOR_WIDTH = 2.0


def find_samples(name: str = "camvid"):
    """A bundled frame set (in the checkout, next to the package, or under the current folder) as a dataset."""
    from ..classes import CAMVID
    from ..learning.datasets import open_dataset
    folder = SAMPLE_SETS[name][0]
    for base in (_repo_root(), Path.cwd()):
        root = base / "sample_data" / folder
        if name == "camvid" and (root / "images").is_dir() and (root / "labels").is_dir():
            return open_dataset("generic", images=root / "images", labels=root / "labels", classes=CAMVID)
        if name == "idd_lite" and (root / "leftImg8bit").is_dir():
            return open_dataset("idd_lite", root=root, split="train")
    raise DemoError(f"sample_data/{folder} not found next to the package or in the current folder; "
                    "run from the repository, or give --images and --labels")


def ground_truth_mapping(frames: ClassTable, model: ClassTable, model_name: str) -> Path | None:
    """The shipped mapping from the frames' classes to the model's (None when they are the same)."""
    from ..classes import table_name
    if frames.names == model.names:
        return None
    src, dst = table_name(frames), table_name(model)
    mapping = find_config_file(f"mappings/{src}_to_{dst}.yaml") if src and dst else None
    if mapping is None:
        raise DemoError(f"the frames are labelled in the {src or 'their own'} classes and {model_name} has other "
                        f"classes ({', '.join(model.names)}) with no shipped mapping between them; use a model "
                        "of the camvid or driving class table")
    return mapping


def find_config_file(name: str = "drive.yaml") -> Path | None:
    """config/NAME of a checkout, of a pip install (share/) or of a colcon install; None if none."""
    candidates = [_repo_root() / "config" / name,
                  Path(sys.prefix) / "share" / "seg_perception" / "config" / name]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("seg_perception")) / "config" / name)
    except Exception:  # not installed, or the package is not in the ament index
        pass
    for path in candidates:
        if path.is_file():
            return path
    return None


# -- ROS environment --------------------------------------------------------------



def demo_environment(out: Path, environ=None) -> dict:
    """The ROS variables the demo sets: localhost discovery, a domain id, ROS_HOME under `out`,
    and (for Fast DDS) config/fastdds_large_frames.xml, a profile for camera-sized messages.

    The user's ROS_DOMAIN_ID, ROS_HOME, ROS_LOG_DIR and Fast DDS profile file are kept when set.
    """
    environ = os.environ if environ is None else environ
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RCUTILS_COLORIZED_OUTPUT": "0", "PYTHONUNBUFFERED": "1"}
    if (environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") in ("", "rmw_fastrtps_cpp")
            and not environ.get("FASTDDS_DEFAULT_PROFILES_FILE")):
        profile = find_config_file("fastdds_large_frames.xml")
        if profile is not None:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile.resolve())
    if not environ.get("ROS_DOMAIN_ID", "").strip():
        env["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
    if not environ.get("ROS_HOME"):
        env["ROS_HOME"] = str((out / "ros_home").resolve())
        if not environ.get("ROS_LOG_DIR"):
            env["ROS_LOG_DIR"] = str((out / "ros_home" / "log").resolve())
    return env


# -- the node process ----------------------------------------------------------------

def node_command(params_file: Path | None, image_topic: str, *, model=None, device: str = "auto",
                 extra_params=()) -> list[str]:
    """`python -m seg_perception.ros.node --ros-args ...` as launch would start it, in the demo namespace."""
    from ..evaluation.bag_evaluation import NODE_MODULE
    cmd = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    cmd += ["-r", f"__ns:={DEMO_NAMESPACE}", "-r", f"image:={image_topic}",
            # reliable input: what counts as dropped is what the node skips, not transport loss
            "-p", "qos_reliability:=reliable", "-p", "stats_period:=0.0"]
    if model:
        cmd += ["-p", f"model:={Path(model).resolve()}"]
    if device != "auto":
        cmd += ["-p", f"device:={device}"]
    for param in extra_params:
        cmd += ["-p", param]
    return cmd


def _node_process_class():
    from ..evaluation.bag_evaluation import NodeProcess

    class DemoNodeProcess(NodeProcess):
        """bag_evaluation's node process (alive, tail, stop), started from a full command line."""

        def __init__(self, cmd: list[str], log_path: Path, env: dict) -> None:  # noqa: D107
            import subprocess
            self.cmd = cmd
            self.log_path = Path(log_path)
            self._log = open(self.log_path, "wb")
            env = dict(env)
            env["PYTHONPATH"] = os.pathsep.join([str(_repo_root())] + [
                p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)

    return DemoNodeProcess


# -- receiving ---------------------------------------------------------------------------

class _Outputs:
    """The node's labels and overlays by header stamp, with their receipt times (monotonic)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.labels: dict[int, tuple[float, np.ndarray | str]] = {}
        self.overlays: dict[int, tuple[float, np.ndarray | str]] = {}
        self.grids: dict[int, tuple[float, np.ndarray | str]] = {}
        self.unexpected = 0

    def _add(self, store: dict, msg, decode) -> None:
        t = time.monotonic()
        st = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        try:
            value = decode(msg)
        except Exception as exc:  # a bad output is recorded, never raised in the executor
            value = f"{type(exc).__name__}: {exc}"
        with self.cond:
            if st in store:
                self.unexpected += 1
            else:
                store[st] = (t, value)
            self.cond.notify_all()

    def on_labels(self, msg) -> None:
        from ..evaluation.bag_evaluation import _image_array

        def decode(m):
            if m.encoding.lower() not in ("mono8", "8uc1"):
                raise ValueError(f"labels encoding '{m.encoding}', expected mono8")
            return _image_array(m)
        self._add(self.labels, msg, decode)

    def on_overlay(self, msg) -> None:
        from ..ros.ros_image import image_to_rgb
        self._add(self.overlays, msg, lambda m: np.array(image_to_rgb(m), copy=True))

    def on_grid(self, msg) -> None:
        self._add(self.grids, msg, lambda m: np.array(m.data, np.int8))

    def wait_for(self, stamp: int, timeout: float, *, overlay: bool = True, grid: bool = False, alive=None) -> bool:
        """Until the labels (and the overlay, the grid) of `stamp` came, the node died, or the time is up."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if (stamp in self.labels and (not overlay or stamp in self.overlays)
                        and (not grid or stamp in self.grids)):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return False
                self.cond.wait(min(left, 0.2))


# -- the run -------------------------------------------------------------------------------

def _clean_outputs(out: Path) -> None:
    for name in OUTPUT_ITEMS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(output=DEFAULT_OUTPUT, *, samples: str = "camvid", images=None, labels=None, camera=None,
             max_frames: int | None = None,
             realtime: bool = False, fps: float = 10.0, model=None, device: str = "auto",
             startup_timeout: float = 120.0, frame_timeout: float = 30.0, video_fps: float = 4.0,
             node_params=()) -> dict:
    """The demo; returns the summary it also writes to OUTPUT/summary.json."""
    from ..bags import Bag, PairStats, make_bag, paired_frames
    from ..classes import CAMVID
    from ..evaluation.bag_evaluation import LabelMapper, latency_summary
    from ..evaluation.metrics import confusion_matrix, scores
    from ..geometry.calibration import CalibrationError, load_calibration
    from ..inference.segmenter import model_info, resolve_model
    from ..learning.datasets import open_dataset

    t_start = time.monotonic()
    if camera is None and images is None:
        camera = find_config_file(f"cameras/{samples}.yaml")
    try:
        calibration = load_calibration(camera) if camera is not None else None
    except CalibrationError as exc:
        raise DemoError(str(exc)) from None
    if images is None and labels is None:
        ds, kind = find_samples(samples), SAMPLE_SETS[samples][1]
    elif images is None or labels is None:
        raise DemoError("give both --images and --labels (or neither, for the bundled frames)")
    else:
        ds, kind = open_dataset("generic", images=images, labels=labels, classes=CAMVID), "CamVid-labelled"
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _clean_outputs(out)
    model_path = resolve_model(model)
    info = model_info(model_path)
    classes = info.classes
    mapping = ground_truth_mapping(ds.classes, classes, model_path.name)

    # 1. the bag
    bag_path = out / "bag"
    made = make_bag(ds, bag_path, storage="mcap", fps=fps, max_frames=max_frames, progress=False,
                    camera=calibration.camera if calibration else None)
    w, h = made["size"]
    _say(f"[1/4] wrote a rosbag2 (mcap) of {made['frames']} {kind} frames ({w}x{h}, {fps:g} frames/s) to "
         f"{bag_path}: {made['image_topic']}, {made['info_topic']}"
         f"{f' (calibration {calibration.source})' if calibration else ' (no calibration: no geometric outputs)'}, "
         f"{made['label_topic']}")

    with Bag(bag_path) as bag:
        pair_stats = PairStats()
        frames = list(paired_frames(bag, BAG_IMAGE_TOPIC, BAG_LABEL_TOPIC, pair_stats))
        mapper = LabelMapper.for_bag(bag, classes, mapping)
        gt = {f.stamp_ns: mapper(f.label, f.name) for f in frames}
        order = [f.stamp_ns for f in frames]
        pose_params = ([f"camera_position:={list(calibration.position)}", f"camera_rpy:={list(calibration.rpy)}"]
                       if calibration else [])
        result = _run_live(bag, out, frames, realtime=realtime, model=model, device=device,
                           startup_timeout=startup_timeout, frame_timeout=frame_timeout,
                           node_params=[*pose_params, *node_params], geometry=calibration is not None)
    received, overlays, published = result["labels"], result["overlays"], result["published"]
    grids = result["grids"]

    # 4. scores, files, summary
    n = classes.num_classes
    cm = np.zeros((n, n), np.int64)
    latencies, sizes_ok, bad = [], 0, []
    (out / "overlay").mkdir()
    (out / "labels").mkdir()
    import cv2
    for i, st in enumerate(order):
        if st in received:
            t, arr = received[st]
            latencies.append((t - published[st]) * 1000.0)
            if isinstance(arr, str):
                bad.append(arr)
            else:
                if arr.shape == gt[st].shape:
                    sizes_ok += 1
                    cm += confusion_matrix(gt[st], arr, n, classes.ignore_index)
                cv2.imwrite(str(out / "labels" / f"frame_{i:03d}.png"), arr)
        if st in overlays and not isinstance(overlays[st][1], str):
            cv2.imwrite(str(out / "overlay" / f"frame_{i:03d}.png"), cv2.cvtColor(overlays[st][1], cv2.COLOR_RGB2BGR))
    got = [st for st in order if st in received]
    span = (max(received[s][0] for s in got) - min(published[s] for s in got)) if got else 0.0
    lat = latency_summary(latencies)
    metrics = scores(cm, classes.names) if sizes_ok else None
    grid_spec, free = _free_distances(grids, order, find_config_file())
    video = write_video(out, frames, overlays, received, classes, gt, fps=video_fps,
                        bev={st: (grids[st][1], grid_spec, free.get(st)) for st in grids if st in free})
    summary = {
        "frames_total": len(order),
        "frames_received": len(got),
        "overlays_received": sum(1 for s in order if s in overlays and not isinstance(overlays[s][1], str)),
        "frames_dropped": len(order) - len(got),
        "frames_scored": sizes_ok,
        "outputs_bad": bad[:5],
        "size": [w, h],
        "output_sizes_match_input": sizes_ok == len(got) and not bad,
        "mode": "realtime" if realtime else "lockstep",
        "fps": len(got) / span if span > 0 else None,
        "latency_ms": lat,
        "latency_kind": "replay publish to receipt of segmentation/labels (same host, monotonic clock)",
        "latency_series_ms": [round(v, 2) for v in latencies],
        "miou": metrics["miou"] if metrics else None,
        "pixel_accuracy": metrics["pixel_accuracy"] if metrics else None,
        "per_class_iou": metrics["per_class_iou"] if metrics else None,
        "model": str(model_path),
        "ground_truth_mapping": str(mapping) if mapping else None,
        "camera_calibration": calibration.source if calibration else None,
        "grids_received": len(free),
        "corridor_width_m": CORRIDOR_WIDTH,
        "free_distance_m": {"median": float(np.median(list(free.values()))) if free else None,
                            "min": float(min(free.values())) if free else None,
                            "per_frame": [round(free[st], 2) if st in free else None for st in order]},
        "node_command": result["command"],
        "node_exit_status": result["exit_status"],
        "ros_domain_id": result["domain_id"],
        "output": str(out),
        "bag": str(bag_path),
        "video": str(video) if video else None,
        "wall_s": time.monotonic() - t_start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _free_distances(grids: dict, order: list, params_file: Path | None):
    """The node's grid geometry (from its parameter file) and the free distance ahead in each frame's grid."""
    import yaml

    from ..geometry.free_space import grid_free_distance
    from ..geometry.ground_projection import GridSpec
    values = {}
    if params_file is not None:
        values = (yaml.safe_load(params_file.read_text()) or {}).get("/**", {}).get("ros__parameters", {})
    spec = GridSpec(resolution=float(values.get("grid_resolution", 0.1)),
                    x_range=(float(values.get("grid_x_min", 0.0)), float(values.get("grid_x_max", 40.0))),
                    y_range=(float(values.get("grid_y_min", -15.0)), float(values.get("grid_y_max", 15.0))))
    free = {}
    for st in order:
        data = grids.get(st, (0, ""))[1]
        if isinstance(data, np.ndarray) and data.size == spec.width * spec.height:
            free[st] = grid_free_distance(data, width=spec.width, height=spec.height, resolution=spec.resolution,
                                          origin_x=spec.x_range[0], origin_y=spec.y_range[0],
                                          corridor_width=CORRIDOR_WIDTH, corridor_start=0.0, occupied_threshold=65)
    return spec, free


def _run_live(bag, out: Path, frames, *, realtime: bool, model, device: str, startup_timeout: float,
              frame_timeout: float, node_params, geometry: bool = False) -> dict:
    """Steps 2 and 3: start the node, replay the bag's images to it, collect its outputs."""
    from rclpy.qos import ReliabilityPolicy

    from ..ros.replay import Replayer, import_rclpy, init_context, qos_profile

    env = demo_environment(out)
    image_topic = f"{DEMO_NAMESPACE}/camera/image_raw"
    labels_topic = f"{DEMO_NAMESPACE}/segmentation/labels"
    overlay_topic = f"{DEMO_NAMESPACE}/segmentation/overlay"
    info_topic = f"{DEMO_NAMESPACE}/camera/camera_info"
    grid_topic = f"{DEMO_NAMESPACE}/segmentation/grid"
    params_file = find_config_file()
    cmd = node_command(params_file, image_topic, model=model, device=device, extra_params=node_params)
    cmd += ["-r", f"camera_info:={info_topic}"]
    outputs = _Outputs()
    published: dict[int, float] = {}
    with ros_environment(env) as full_env:
        domain = full_env.get("ROS_DOMAIN_ID")
        rclpy = ctx = node = executor = spin_thread = None
        node_proc = _node_process_class()(cmd, out / "node.log", full_env)
        try:
            _say(f"[2/4] started segmentation_node (pid {node_proc.proc.pid}) in namespace {DEMO_NAMESPACE}, "
                 f"ROS_DOMAIN_ID {domain}, localhost only; parameters "
                 f"{params_file if params_file else '(defaults: config/drive.yaml not found)'}; "
                 f"log {out / 'node.log'}")
            rclpy = import_rclpy()
            ctx = init_context(rclpy)
            node = rclpy.create_node("seg_perception_demo", context=ctx)
            topics = [BAG_IMAGE_TOPIC] + ([BAG_INFO_TOPIC] if geometry else [])
            player = Replayer(bag, node=node, topics=topics,
                              remap={BAG_IMAGE_TOPIC: image_topic, BAG_INFO_TOPIC: info_topic},
                              reliability="reliable", depth=10)
            deadline = time.monotonic() + startup_timeout
            while True:
                if not node_proc.alive():
                    raise DemoError(f"segmentation_node exited (status {node_proc.proc.returncode}) before it was "
                                    f"ready: {node_proc.tail() or 'no output'}")
                pubs = node.get_publishers_info_by_topic(labels_topic)
                if pubs and player.publishers[BAG_IMAGE_TOPIC].get_subscription_count() > 0:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"segmentation_node did not come up within {startup_timeout:g} s; "
                                    f"log: {node_proc.tail()}")
                time.sleep(0.1)
            best_effort = all(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in pubs)
            qos = qos_profile("best_effort" if best_effort else "reliable", depth=100)
            from sensor_msgs.msg import Image
            sub_labels = node.create_subscription(Image, labels_topic, outputs.on_labels, qos)
            sub_overlay = node.create_subscription(Image, overlay_topic, outputs.on_overlay, qos)
            sub_grid = None
            if geometry:
                from nav_msgs.msg import OccupancyGrid
                sub_grid = node.create_subscription(OccupancyGrid, grid_topic, outputs.on_grid, qos)
            from rclpy.executors import SingleThreadedExecutor
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            spin_thread = threading.Thread(target=executor.spin, daemon=True)
            spin_thread.start()
            while (sub_labels.get_publisher_count() == 0 or sub_overlay.get_publisher_count() == 0
                   or (sub_grid is not None and sub_grid.get_publisher_count() == 0)):
                if time.monotonic() > deadline:
                    raise DemoError(f"could not subscribe to {labels_topic} and {overlay_topic}")
                time.sleep(0.05)
            t_warm = _warm_up(player, outputs, node_proc, deadline)
            _say(f"      node ready: model loaded, warm-up frame answered in {t_warm * 1000:.0f} ms")

            def gate(topic, stamp, _t):
                # lockstep: the next frame goes out once the node answered the previous one
                if topic != BAG_IMAGE_TOPIC:
                    return
                if not realtime and published:
                    outputs.wait_for(last[0], frame_timeout, grid=geometry, alive=node_proc.alive)
                if not node_proc.alive():
                    raise DemoError(f"segmentation_node exited (status {node_proc.proc.returncode}): "
                                    f"{node_proc.tail()}")
                published[stamp] = time.monotonic()
                last[0] = stamp

            last = [None]
            how = ("at the recorded rate (like a live camera)" if realtime
                   else "each frame once the node answered the previous one")
            _say(f"[3/4] replaying {len(frames)} frames over DDS to {image_topic}"
                 f"{f' (and {info_topic})' if geometry else ''}, {how}; receiving {labels_topic}, {overlay_topic}"
                 f"{f' and {grid_topic}' if geometry else ''}")
            player.play(rate=1.0 if realtime else 1000.0, on_publish=gate, progress=False)
            player.flush()
            if published:
                end = time.monotonic() + frame_timeout
                for st in sorted(published):  # drain: the last outputs
                    if not outputs.wait_for(st, max(0.0, end - time.monotonic()), grid=geometry,
                                            alive=node_proc.alive):
                        if time.monotonic() >= end or not node_proc.alive():
                            break
        finally:
            try:
                if executor is not None:
                    executor.shutdown(timeout_sec=2.0)
                if spin_thread is not None:
                    spin_thread.join(timeout=2.0)
                if node is not None:
                    node.destroy_node()
                if ctx is not None:
                    rclpy.try_shutdown(context=ctx)
            finally:
                _stop_node(node_proc)
    with outputs.cond:
        labels = {k: v for k, v in outputs.labels.items() if k in published}
        overlays = {k: v for k, v in outputs.overlays.items() if k in published}
        grids = {k: v for k, v in outputs.grids.items() if k in published}
    return {"labels": labels, "overlays": overlays, "grids": grids, "published": published, "command": node_proc.cmd,
            "exit_status": node_proc.proc.returncode, "domain_id": domain}


def _stop_node(node_proc) -> None:
    """SIGINT, then SIGTERM, then SIGKILL (bag_evaluation's stop); killed at once on a second Ctrl-C."""
    try:
        node_proc.stop()
    except BaseException:
        if node_proc.proc.poll() is None:
            node_proc.proc.kill()
            node_proc.proc.wait()
        raise


def _warm_up(player, outputs: _Outputs, node_proc, deadline: float) -> float:
    """Send one frame (stamp WARMUP_STAMP_NS, not counted) until the node answers it with labels and overlay.

    The node loads its model and computes the overlay only once it sees a subscriber; this makes
    sure both happened before the measured frames go out. Returns the answer time in seconds.
    """
    import struct

    def first_restamped(topic: str) -> bytes:
        """The topic's first message as recorded (serialised CDR, header first), restamped."""
        msg = bytearray(next(r for _, _, _, r in player.bag.messages([topic])))
        struct.pack_into("<iI" if msg[1] == 1 else ">iI", msg, 4, 0, WARMUP_STAMP_NS)
        return bytes(msg)

    # the camera info too (when replayed), so that the warm-up frame has its CameraInfo like every other
    warmup = [(player.publishers[t], first_restamped(t)) for t in reversed(player.topics)]
    while True:
        t0 = time.monotonic()
        for pub, msg in warmup:
            pub.publish(msg)
        if outputs.wait_for(WARMUP_STAMP_NS, 2.0, alive=node_proc.alive):
            return time.monotonic() - t0
        if not node_proc.alive():
            raise DemoError(f"segmentation_node exited (status {node_proc.proc.returncode}): {node_proc.tail()}")
        if time.monotonic() > deadline:
            raise DemoError(f"segmentation_node did not answer a frame in time; log: {node_proc.tail()}")
        with outputs.cond:  # an overlay-less answer (subscription not yet seen by the node): ask again
            outputs.labels.pop(WARMUP_STAMP_NS, None)
            outputs.overlays.pop(WARMUP_STAMP_NS, None)


# -- the video ---------------------------------------------------------------------------------

def _panel(rgb: np.ndarray, title: str) -> np.ndarray:
    import cv2
    bar = np.zeros((28, rgb.shape[1], 3), np.uint8)
    cv2.putText(bar, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, rgb])


def side_by_side(frames, overlays, received, classes, gt, bev=None) -> list[np.ndarray]:
    """RGB frames: camera | ground truth (in the model's classes) | the node's overlay | the bird's-eye
    view of its grid (where `bev` has it: stamp -> (grid values, GridSpec, free distance)), in bag order.
    """
    from ..geometry.bev import draw_bev
    from ..inference.masks import colourise
    lut = classes.palette_array()
    lut[classes.ignore_index] = 0
    out = []
    for f in frames:
        if f.stamp_ns not in received or isinstance(received[f.stamp_ns][1], str):
            continue
        ov = overlays.get(f.stamp_ns)
        if ov is None or isinstance(ov[1], str) or ov[1].shape != f.rgb.shape:
            continue
        panels = [_panel(f.rgb, "camera"), _panel(colourise(gt[f.stamp_ns], lut), "ground truth"),
                  _panel(ov[1], "segmentation/overlay")]
        if bev:
            if f.stamp_ns in bev:
                values, spec, free = bev[f.stamp_ns]
                view = draw_bev(values, spec, height=f.rgb.shape[0], free_distance=free, corridor_width=CORRIDOR_WIDTH)
            else:
                view = np.zeros((f.rgb.shape[0], f.rgb.shape[0] * 3 // 4, 3), np.uint8)
            panels.append(_panel(view, "segmentation/grid"))
        out.append(np.hstack(panels))
    return out


def write_video(out: Path, frames, overlays, received, classes, gt, *, fps: float = 4.0, bev=None) -> Path | None:
    """demo.mp4 (mp4v); demo.gif if no MPEG-4 encoder is available; else PNGs in side_by_side/."""
    import cv2
    images = side_by_side(frames, overlays, received, classes, gt, bev)
    if not images:
        return None
    h, w = images[0].shape[:2]
    path = out / "demo.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if writer.isOpened():
        for im in images:
            writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        writer.release()
        if path.is_file() and path.stat().st_size > 0:
            return path
    writer.release()
    path.unlink(missing_ok=True)
    try:
        from PIL import Image as PILImage
        pil = [PILImage.fromarray(im) for im in images]
        path = out / "demo.gif"
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
        return path
    except Exception:
        folder = out / "side_by_side"
        folder.mkdir(exist_ok=True)
        for i, im in enumerate(images):
            cv2.imwrite(str(folder / f"frame_{i:03d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        return folder


# -- the command ---------------------------------------------------------------------------------

def format_summary(s: dict) -> list[str]:
    lat = s["latency_ms"]

    def ms(v):
        return "n/a" if v is None else f"{v:.1f} ms"
    w, h = s["size"]
    lines = [
        f"frames: {s['frames_received']}/{s['frames_total']} received, {s['frames_dropped']} dropped "
        f"({s['overlays_received']} overlays; outputs {w}x{h}"
        f"{', same size as the input' if s['output_sizes_match_input'] else ', NOT all the input size'})",
        f"throughput: {s['fps']:.1f} frames/s" if s["fps"] else "throughput: n/a",
        f"latency: p50 {ms(lat['p50'])}, p95 {ms(lat['p95'])}, max {ms(lat['max'])} "
        "(replay publish -> segmentation/labels received)",
    ]
    if s["miou"] is not None:
        mapped = (f", labels mapped by {Path(s['ground_truth_mapping']).name}"
                  if s.get("ground_truth_mapping") else "")
        lines.append(f"accuracy vs the bag's ground truth ({s['frames_scored']} frames{mapped}): mIoU "
                     f"{100 * s['miou']:.1f}%, pixel accuracy {100 * s['pixel_accuracy']:.1f}%")
    fd = s.get("free_distance_m") or {}
    if fd.get("median") is not None:
        lines.append(f"free distance ahead (segmentation/grid, a {s['corridor_width_m']:g} m corridor; calibration "
                     f"{Path(s['camera_calibration']).name}): median {fd['median']:.1f} m, min {fd['min']:.1f} m over "
                     f"{s['grids_received']} frames")
    out = Path(s["output"])
    lines.append(f"files in {out}/: overlay/ ({s['overlays_received']} PNG), labels/ (class ids, mono8 PNG), "
                 f"{Path(s['video']).name if s['video'] else 'no video'}, summary.json, node.log, bag/")
    return lines


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the segmentation node on bundled real frames over DDS and show the results",
        description="Make a rosbag2 from the bundled CamVid (or IDD-Lite) frames, start segmentation_node as its "
                    "own process, "
                    "replay the bag to it over DDS (localhost only), and write its overlays, a side-by-side "
                    "video and summary.json to the output folder; prints frames/s, latency, dropped frames "
                    "and mIoU against the ground truth.")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help=f"output folder (default ./{DEFAULT_OUTPUT}; its earlier demo files are replaced)")
    p.add_argument("--samples", choices=sorted(SAMPLE_SETS), default="camvid",
                   help="bundled frames: camvid (12 Cambridge frames, sample_data/camvid_val; default) or idd_lite "
                        "(8 frames of Indian streets, sample_data/idd_lite); labels are mapped into the model's "
                        "classes by config/mappings/ where they differ")
    p.add_argument("--images", help="image folder instead of the bundled frames")
    p.add_argument("--labels", help="CamVid class-id label folder for --images (same file names)")
    p.add_argument("--camera", help="camera calibration YAML (camera_calibration format plus camera_position and "
                                    "camera_rpy) for the geometric outputs; default: config/cameras/<samples>.yaml "
                                    "for the bundled frames, none for --images")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--realtime", action="store_true",
                   help="replay at the bag's recorded rate like a live camera (a slow machine drops frames); "
                        "default: each frame goes out once the node answered the previous one")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate recorded in the bag (default 10)")
    p.add_argument("--model", help="model for the node: a shipped model's name (camvid, driving) or a .pt/.onnx "
                                   "file; default: driving")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="the node's device")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter (repeatable), e.g. overlay_alpha:=0.7")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds to wait for the node to come up (default 120)")
    p.add_argument("--frame-timeout", type=float, default=30.0,
                   help="seconds to wait for the node's answer to a frame (default 30)")
    p.add_argument("--video-fps", type=float, default=4.0, help="frame rate of the video (default 4)")


def run(args) -> int:
    for param in args.node_param:
        if ":=" not in param:
            raise DemoError(f"node parameter '{param}' is not of the form name:=value")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        s = run_demo(args.output, samples=args.samples, images=args.images, labels=args.labels, camera=args.camera,
                     max_frames=args.max_frames,
                     realtime=args.realtime, fps=args.fps, model=args.model, device=args.device,
                     startup_timeout=args.startup_timeout, frame_timeout=args.frame_timeout,
                     video_fps=args.video_fps, node_params=args.node_param)
    except DemoError as exc:
        print(f"seg-perception demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _say(f"[4/4] done in {s['wall_s']:.1f} s")
    for line in format_summary(s):
        _say("  " + line)
    complete = s["frames_dropped"] == 0 and s["output_sizes_match_input"]
    return 0 if s["frames_received"] > 0 and (complete or s["mode"] == "realtime") else 1


DEMO_COMMANDS = {"demo": (add_demo, run)}
