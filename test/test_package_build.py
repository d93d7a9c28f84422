# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`colcon build` of the package into a temporary tree installs what `ros2 run` / `ros2 launch` need."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE_FILES = ("seg_perception", "launch", "config", "resource", "package.xml", "setup.py", "setup.cfg")


def _colcon() -> list[str]:
    if importlib.util.find_spec("colcon_core") is None or importlib.util.find_spec("colcon_ros") is None:
        pytest.fail("colcon is not installed: pip install colcon-common-extensions colcon-ros")
    exe = Path(sys.executable).with_name("colcon")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "colcon_core.command"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A copy of the package in a temporary workspace, so building leaves the repository untouched."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "seg_perception"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = dict(os.environ, COLCON_HOME=str(ws / "colcon_home"), PYTHONDONTWRITEBYTECODE="1")
    return ws, env


def run(cmd, ws, env, timeout=600):
    return subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


def test_colcon_lists_an_ament_python_package(workspace):
    ws, env = workspace
    res = run(_colcon() + ["list", "--base-paths", str(ws / "src")], ws, env)
    assert res.returncode == 0, res.stderr
    name, _, kind = res.stdout.strip().split("\t")
    assert name == "seg_perception"
    assert kind == "(ros.ament_python)", res.stdout


def test_colcon_build_installs_the_expected_tree(workspace):
    ws, env = workspace
    install = ws / "install"
    res = run(_colcon() + ["--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
                           "--build-base", str(ws / "build"), "--install-base", str(install),
                           "--event-handlers", "console_direct-"], ws, env)
    assert res.returncode == 0, res.stdout + res.stderr
    prefix = install / "seg_perception"
    share = prefix / "share" / "seg_perception"
    expected = [
        prefix / "lib" / "seg_perception" / "segmentation_node",
        prefix / "lib" / "seg_perception" / "seg-perception",
        prefix / "lib" / "seg_perception" / "free_space_monitor",
        prefix / "lib" / "seg_perception" / "segmentation_lifecycle_node",
        prefix / "share" / "ament_index" / "resource_index" / "packages" / "seg_perception",
        share / "package.xml",
        share / "launch" / "drive.launch.py",
        share / "config" / "drive.yaml",
        share / "config" / "mappings" / "camvid_to_driving.yaml",
        share / "config" / "cameras" / "camvid.yaml",
        share / "config" / "nav2_costmap_example.yaml",
    ]
    manifest = (share / "package.xml").read_text()
    # what the launch file and the nodes use
    for dep in ("ros2launch", "launch_ros", "lifecycle_msgs", "nav_msgs", "tf2_ros"):
        assert f"<exec_depend>{dep}</exec_depend>" in manifest, dep
    missing = [str(p.relative_to(install)) for p in expected if not p.is_file()]
    assert not missing, f"not installed: {missing}"
    assert os.access(expected[0], os.X_OK)
    site = next(prefix.glob("lib/python3*/site-packages"))
    for module in ("ros/node.py", "ros/free_space_monitor.py", "geometry/ground_projection.py",
                   "inference/segmenter.py", "learning/training.py", "evaluation/metrics.py", "cli/main.py"):
        assert (site / "seg_perception" / module).is_file(), module
    assert (site / "seg_perception" / "models" / "camvid_lraspp.pt").is_file()
    # the shipped models are installed once, in the package, where the code finds them by name
    for name in ("camvid_lraspp.pt", "camvid_lraspp.onnx", "driving_lraspp.pt", "driving_lraspp.onnx"):
        installed = site / "seg_perception" / "models" / name
        assert installed.stat().st_size == (REPO / "seg_perception" / "models" / name).stat().st_size
    copies = [p for p in install.rglob("*.onnx") if p.name == "driving_lraspp.onnx"]
    assert len(copies) == 1, copies
    assert not list((ws / "src" / "seg_perception").glob("*.egg-info")), "build wrote into the source tree"

    # The installed executable runs from the install tree (a bad parameter: a fast, clear exit).
    run_env = dict(env, PYTHONPATH=str(site), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_HOME=str(ws / "ros_home"), RCUTILS_COLORIZED_OUTPUT="0")
    res = run([str(expected[0]), "--ros-args", "-p", "device:=tpu"], ws, run_env, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "parameter 'device' is 'tpu'" in res.stdout + res.stderr
    assert str(site) in subprocess.run(
        [sys.executable, "-c", "import seg_perception.ros.node as n; print(n.__file__)"],
        env=run_env, capture_output=True, text=True, cwd=ws).stdout
