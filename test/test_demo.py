# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception demo` end to end: a real node process, real DDS, the bundled CamVid frames."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from conftest import REPO, SAMPLES

from seg_perception.cli import demo

N_FRAMES = len(list((SAMPLES / "images").glob("*.png")))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _demo_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seg_perception.cli", "demo", "--output", str(out), *extra]


@pytest.fixture(scope="module")
def demo_run(module_ros_env, tmp_path_factory):
    """One demo run in a temporary folder (not the repository): its output folder, stdout and exit status."""
    cwd = tmp_path_factory.mktemp("demo_cwd")
    out = cwd / "demo_output"
    res = subprocess.run(_demo_cmd(out), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    return out, res


def test_demo_runs_and_prints_the_figures(demo_run):
    out, res = demo_run
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout
    assert f"frames: {N_FRAMES}/{N_FRAMES} received, 0 dropped" in text, text
    assert re.search(r"throughput: \d+\.\d frames/s", text), text
    assert re.search(r"latency: p50 \d+\.\d ms, p95 \d+\.\d ms", text), text
    assert re.search(r"mapped by camvid_to_driving.yaml\): mIoU \d+\.\d%, pixel accuracy \d+\.\d%", text), text
    assert re.search(r"free distance ahead \(segmentation/grid, a 2 m corridor; calibration camvid.yaml\): "
                     r"median \d+\.\d m, min \d+\.\d m over 12 frames", text), text
    assert str(out) in text  # says where the files are


def test_every_frame_came_back_at_the_input_size(demo_run):
    out, res = demo_run
    s = json.loads((out / "summary.json").read_text())
    assert (s["frames_total"], s["frames_received"], s["overlays_received"], s["frames_dropped"]) == \
        (N_FRAMES, N_FRAMES, N_FRAMES, 0), s
    assert s["output_sizes_match_input"] and s["frames_scored"] == N_FRAMES
    assert s["fps"] > 0 and s["latency_ms"]["count"] == N_FRAMES
    assert 0.0 <= s["latency_ms"]["p50"] <= s["latency_ms"]["p95"]
    # the default (driving) model, scored against the CamVid labels through the shipped mapping
    assert s["model"].endswith("driving_lraspp.pt")
    assert s["ground_truth_mapping"].endswith("camvid_to_driving.yaml")
    assert set(s["per_class_iou"]) == {"drivable", "non-drivable", "living things", "vehicles", "roadside objects",
                                       "far objects", "sky"}
    assert 0.0 <= s["miou"] <= 1.0 and s["pixel_accuracy"] >= 0.85
    assert s["node_exit_status"] == 0, (out / "node.log").read_text()  # the node stopped cleanly

    inputs = sorted((SAMPLES / "images").glob("*.png"))
    overlays = sorted((out / "overlay").glob("*.png"))
    labels = sorted((out / "labels").glob("*.png"))
    assert len(overlays) == len(labels) == N_FRAMES
    for src, ov, lab in zip(inputs, overlays, labels):
        h, w = cv2.imread(str(src)).shape[:2]
        overlay = cv2.imread(str(ov), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (h, w, 3), ov
        assert label.shape == (h, w) and int(label.max()) < 7, lab


def test_the_video_and_summary_are_written(demo_run):
    out, _ = demo_run
    s = json.loads((out / "summary.json").read_text())
    video = Path(s["video"])
    assert video.exists() and video.parent == out
    if video.suffix == ".mp4":
        cap = cv2.VideoCapture(str(video))
        frames = 0
        while cap.read()[0]:
            frames += 1
        assert frames == N_FRAMES
        # camera | ground truth | overlay | bird's-eye grid (30 m wide by 40 m deep at the frame's height)
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 3 * 480 + 360 * 3 // 4
    else:
        assert video.stat().st_size > 0
    assert (out / "bag" / "metadata.yaml").is_file()
    assert (out / "node.log").is_file()


def test_the_bird_eye_view_comes_from_the_nodes_grid(demo_run):
    """The stated CamVid calibration goes into the bag's CameraInfo and the node's pose parameters; the
    node's grid comes back for every frame and the free distance ahead is measured in it.
    """
    out, _ = demo_run
    s = json.loads((out / "summary.json").read_text())
    assert s["camera_calibration"].endswith("cameras/camvid.yaml")
    assert s["grids_received"] == N_FRAMES
    free = s["free_distance_m"]
    assert len(free["per_frame"]) == N_FRAMES and None not in free["per_frame"]
    # CamVid's val frames look down a street with traffic: some road is free ahead, never 40 m of it.
    assert 3.0 < free["min"] <= free["median"] < 30.0
    cmd = s["node_command"]
    assert "camera_position:=[1.5, 0.0, 1.25]" in cmd
    assert f"camera_info:={demo.DEMO_NAMESPACE}/camera/camera_info" in cmd
    from seg_perception.bags import Bag, typestore
    with Bag(out / "bag") as bag:
        _, msgtype, _, raw = next(bag.messages(["/camera/camera_info"]))
    info = typestore().deserialize_cdr(raw, msgtype)
    assert list(info.k)[:3] == [461.0, 0.0, 239.5]


def test_the_node_gets_the_shipped_parameter_file(demo_run):
    out, _ = demo_run
    cmd = json.loads((out / "summary.json").read_text())["node_command"]
    assert cmd[1:4] == ["-m", "seg_perception.ros.node", "--ros-args"]
    assert cmd[cmd.index("--params-file") + 1] == str(REPO / "config" / "drive.yaml")
    assert f"image:={demo.DEMO_NAMESPACE}/camera/image_raw" in cmd


def test_ctrl_c_stops_the_demo_and_its_node(ros_env, tmp_path):
    # A slow recorded rate (12 frames at 0.2 frames/s) keeps the demo busy until the SIGINT lands. SIGINT is
    # reset to its default in the child: a shell's background job (`cmd &`) inherits it ignored, as a user's
    # Ctrl-C never would be.
    proc = subprocess.Popen(_demo_cmd(tmp_path / "out", "--realtime", "--fps", "0.2"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"started segmentation_node \(pid (\d+)\)", line)
            if m:
                node_pid = int(m.group(1))
                break
        else:
            pytest.fail("the demo never started the node: " + "".join(lines))
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    deadline = time.monotonic() + 10
    while Path(f"/proc/{node_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{node_pid}").exists(), "the node process outlived the demo"


def test_demo_environment_keeps_the_users_settings(tmp_path):
    env = demo.demo_environment(tmp_path, {"ROS_DOMAIN_ID": "42", "ROS_HOME": "/somewhere"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "ROS_DOMAIN_ID" not in env and "ROS_HOME" not in env and "ROS_LOG_DIR" not in env
    env = demo.demo_environment(tmp_path, {})
    assert 0 <= int(env["ROS_DOMAIN_ID"]) <= 101
    assert env["ROS_HOME"] == str((tmp_path / "ros_home").resolve())
    assert env["ROS_LOG_DIR"] == str((tmp_path / "ros_home" / "log").resolve())
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == demo.find_config_file("fastdds_large_frames.xml").resolve()
    assert "<segment_size>335544320</segment_size>" in Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read_text()
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in demo.demo_environment(
        tmp_path, {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"})
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in demo.demo_environment(
        tmp_path, {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})


def test_half_a_custom_dataset_is_refused(tmp_path):
    res = subprocess.run(_demo_cmd(tmp_path / "out", "--images", str(SAMPLES / "images")), cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "give both --images and --labels" in res.stderr


def test_bundled_idd_lite_frames_and_label_mappings(module_ros_env, tmp_path):
    """--samples idd_lite: Indian streets through the default (driving) model, scored in its own classes;
    the mapping between the two shipped tables is found in both directions.
    """
    from seg_perception.classes import CAMVID, CITYSCAPES, DRIVING
    assert demo.ground_truth_mapping(DRIVING, DRIVING, "m") is None
    assert demo.ground_truth_mapping(DRIVING, CAMVID, "m").name == "driving_to_camvid.yaml"
    assert demo.ground_truth_mapping(CAMVID, DRIVING, "m").name == "camvid_to_driving.yaml"
    with pytest.raises(demo.DemoError, match="no shipped mapping"):
        demo.ground_truth_mapping(CITYSCAPES, DRIVING, "m")
    out = tmp_path / "idd_demo"
    res = subprocess.run(_demo_cmd(out, "--samples", "idd_lite", "--max-frames", "4"), cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "of 4 IDD-Lite frames (320x227" in res.stdout and "frames: 4/4 received, 0 dropped" in res.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["ground_truth_mapping"] is None and set(s["per_class_iou"]) == set(DRIVING.names)
    assert s["frames_scored"] == 4 and s["pixel_accuracy"] >= 0.75
