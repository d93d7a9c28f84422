# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: an isolated ROS 2 environment per test (or module) and the node as a process."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
ROS_ENV_KEYS = ("ROS_DOMAIN_ID", "ROS_HOME", "ROS_LOG_DIR", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS",
                "ROS_LOCALHOST_ONLY", "RMW_IMPLEMENTATION", "RCUTILS_LOGGING_BUFFERED_STREAM",
                "RCUTILS_COLORIZED_OUTPUT", "PYTHONUNBUFFERED")
_domain_counter = itertools.count()


def unique_domain_id() -> int:
    """A DDS domain in 1..100 that differs between the tests of a run and (likely) between runs."""
    return (os.getpid() * 7 + next(_domain_counter)) % 100 + 1


def _ros_env(home: Path) -> dict:
    return {
        "ROS_DOMAIN_ID": str(unique_domain_id()),
        "ROS_HOME": str(home),
        "ROS_LOG_DIR": str(home / "log"),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_STATIC_PEERS": "",
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
        "RCUTILS_COLORIZED_OUTPUT": "0",
        "PYTHONUNBUFFERED": "1",
    }


class _EnvPatch:
    def __init__(self, values: dict) -> None:
        self.values = values
        self.saved = {k: os.environ.get(k) for k in ROS_ENV_KEYS}

    def __enter__(self) -> dict:
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        os.environ.update(self.values)
        return self.values

    def __exit__(self, *exc) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def dds_env(tmp_path: Path, monkeypatch) -> dict:
    """This test's own DDS environment set through monkeypatch (undone after the test), with the repo
    on PYTHONPATH for the processes it starts; returns the whole environment for subprocesses.
    """
    for key, value in _ros_env(tmp_path / "ros_home").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return dict(os.environ)


@pytest.fixture
def ros_env(tmp_path):
    """This test's own ROS environment (domain id, ROS_HOME, localhost discovery) in os.environ."""
    with _EnvPatch(_ros_env(tmp_path / "ros_home")) as env:
        yield env


@pytest.fixture(scope="module")
def module_ros_env(tmp_path_factory):
    """Like ros_env, shared by the tests of one module (so one node process serves them all)."""
    with _EnvPatch(_ros_env(tmp_path_factory.mktemp("ros_home"))) as env:
        yield env


class NodeProcess:
    """A node of the package (segmentation_node unless `module` says otherwise) started the way
    launch_ros starts it: `python -m ... --ros-args ...`.
    """

    def __init__(self, ros_args: list[str], log_path: Path, *, module: str = "seg_perception.ros.node") -> None:
        self.log_path = log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._log = open(log_path, "wb")
        self.cmd = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal the node and wait for it; killed (and -9 returned) if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def node_args(*, params: dict | None = None, remaps: dict | None = None, params_file: bool = True) -> list[str]:
    """--ros-args for the node: the shipped parameter file, then -p overrides and -r remappings."""
    args = ["--params-file", str(REPO / "config" / "drive.yaml")] if params_file else []
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        args += ["-p", f"{k}:={v}"]
    for k, v in (remaps or {}).items():
        args += ["-r", f"{k}:={v}"]
    return args


@pytest.fixture
def start_node(tmp_path):
    """Factory for node processes; whatever is still running at the end is stopped."""
    procs: list[NodeProcess] = []

    def start(ros_args: list[str], name: str = "node", **kwargs) -> NodeProcess:
        proc = NodeProcess(ros_args, tmp_path / f"{name}{len(procs)}.log", **kwargs)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()


def wait_for(predicate, timeout: float, spin=None, interval: float = 0.05) -> bool:
    """Poll predicate (spinning `spin(interval)` in between, if given) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if spin is not None:
            spin(interval)
        else:
            time.sleep(interval)
    return bool(predicate())


def jpeg_claiming(rgb, width: int, height: int) -> bytes:
    """A real JPEG whose frame header claims width x height: a few hundred bytes of decompression bomb."""
    from seg_perception.image_codec import encode_compressed
    data = bytearray(encode_compressed(rgb[:16, :16], "jpeg"))
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 7], data[i + 7:i + 9] = height.to_bytes(2, "big"), width.to_bytes(2, "big")
    return bytes(data)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (starting one takes seconds); the fleet code uses the
    connection it finds. Its workers import this checkout.
    """
    ray = pytest.importorskip("ray")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([saved] if saved else []))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    yield ray
    ray.shutdown()


class RosProbe:
    """An in-process rclpy node in its own context, spun by the test: publishes inputs, records outputs."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
