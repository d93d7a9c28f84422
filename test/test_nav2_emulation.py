# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""What Nav2's ObstacleLayer makes of the node's outputs under the shipped example config.

Nav2 cannot be installed here, so its rules are emulated, each written from the Nav2 (Kilted) or
laser_geometry source named beside it, and fed by the node's real outputs over DDS (real CamVid
frames, the camvid model) for a level camera and a steeply pitched one. The costmap is judged
against what the labels show, computed independently of the node's geometry code (closed-form
pinhole projection): no mark where the labels show no boundary, no clearing beyond the ground
seen on a bearing or in the blind strip in front of the camera, obstacle contacts marked,
drivable ground not marked. The former config (a scan with inf_is_valid that marked and cleared)
fails the same criteria, so the check can fail.
"""
from __future__ import annotations

import copy
import math
import signal
from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from conftest import REPO, SAMPLES, NodeProcess, node_args, wait_for
from sensor_msgs.msg import LaserScan
from test_planner_outputs import CAMERA, INFO, START_TIMEOUT, GeoProbe, camera_info, to_array

from seg_perception.classes import CAMVID
from seg_perception.geometry.free_space import OrganizedCloud
from seg_perception.learning.datasets import read_rgb

CONFIG = REPO / "config" / "nav2_costmap_example.yaml"
MULTI_CONFIG = REPO / "config" / "nav2_costmap_multi_camera_example.yaml"
MAX_RANGE = 30.0
W, H = 480, 360
F = (W / 2) / math.tan(math.radians(65.0) / 2)  # a 65 deg lens, as the example config describes
CX, CY = (W - 1) / 2, (H - 1) / 2
POSES = {  # name: (camera_position, camera_rpy)
    "level": ([1.2, 0.0, 1.4], [0.0, 0.0, 0.0]),        # the examples' front camera (ground in view to 30 m)
    "pitched": ([2.3, 0.0, 0.6], [0.0, 0.52, 0.0]),     # their bumper camera, 30 deg down: view ends at 11 m
}
#: pose: the (config, camera namespace in it) that describe that camera
CONFIGS = {"level": [(CONFIG, ""), (MULTI_CONFIG, "/front")], "pitched": [(MULTI_CONFIG, "/bumper")]}
LETHAL = 254

# -- Nav2's ObstacleLayer, emulated ---------------------------------------------------------------


class Costmap:
    """A rolling-window Costmap2D centred on the robot at the origin of odom (= base_footprint here)."""

    def __init__(self, params: dict) -> None:
        self.res = float(params["resolution"])
        self.size_x = int(round(float(params["width"]) / self.res))
        self.size_y = int(round(float(params["height"]) / self.res))
        # ObstacleLayer::updateBounds -> updateOrigin(robot_x - size_x / 2, ...) for a rolling window
        self.origin_x = -self.size_x * self.res / 2
        self.origin_y = -self.size_y * self.res / 2
        self.cleared = np.zeros(self.size_x * self.size_y, bool)   # cells a clearing ray set FREE_SPACE
        self.marked = np.zeros(self.size_x * self.size_y, bool)    # cells marking set LETHAL_OBSTACLE

    def world_to_map(self, wx: float, wy: float):
        """Costmap2D::worldToMap (costmap_2d.cpp): None outside the map."""
        if wx < self.origin_x or wy < self.origin_y:
            return None
        mx, my = int((wx - self.origin_x) / self.res), int((wy - self.origin_y) / self.res)
        return (mx, my) if mx < self.size_x and my < self.size_y else None

    def cell_distance(self, world_dist: float) -> int:
        """Costmap2D::cellDistance: ceil(world_dist / resolution), at least 0."""
        return int(max(0.0, math.ceil(world_dist / self.res)))

    def raytrace_line(self, x0, y0, x1, y1, max_length, min_length) -> None:
        """Costmap2D::raytraceLine (costmap_2d.hpp) with bresenham2D, clearing every cell it visits."""
        dx_full, dy_full = x1 - x0, y1 - y0
        dist = math.hypot(dx_full, dy_full)
        if dist < min_length:
            return
        if dist > 0.0:
            min_x0 = int(x0 + dx_full / dist * min_length)
            min_y0 = int(y0 + dy_full / dist * min_length)
        else:
            min_x0, min_y0 = x0, y0
        offset = min_y0 * self.size_x + min_x0
        dx, dy = x1 - min_x0, y1 - min_y0
        abs_dx, abs_dy = abs(dx), abs(dy)
        sign = lambda v: 1 if v > 0 else -1                           # noqa: E731  Costmap2D::sign: sign(0) = -1
        offset_dx = sign(dx)
        offset_dy = sign(dy) * self.size_x
        scale = 1.0 if dist == 0.0 else min(1.0, max_length / dist)
        if abs_dx >= abs_dy:
            self._bresenham(abs_dx, abs_dy, abs_dx // 2, offset_dx, offset_dy, offset, int(scale * abs_dx))
        else:
            self._bresenham(abs_dy, abs_dx, abs_dy // 2, offset_dy, offset_dx, offset, int(scale * abs_dy))

    def _bresenham(self, abs_da, abs_db, error_b, offset_a, offset_b, offset, max_length) -> None:
        """Costmap2D::bresenham2D: the cells up to min(max_length, abs_da) steps, and the last one."""
        for _ in range(min(max_length, abs_da)):
            self.cleared[offset] = True
            offset += offset_a
            error_b += abs_db
            if error_b >= abs_da:
                offset += offset_b
                error_b -= abs_da
        self.cleared[offset] = True


@dataclass
class Observation:
    """nav2_costmap_2d::Observation: the cloud (N, 3) in the global frame and the source's ranges."""

    points: np.ndarray
    origin: tuple[float, float, float]
    source: dict


def scan_to_cloud(msg: LaserScan, inf_is_valid: bool) -> np.ndarray:
    """ObstacleLayer::laserScanValidInfCallback (obstacle_layer.cpp) when inf_is_valid: +inf becomes
    range_max - 1e-4; then laser_geometry's LaserProjection::projectLaser_ (laser_geometry.cpp) keeps
    range_min <= r < range_max (NaN and +inf fail both) at angle_min + i * angle_increment, z = 0.
    """
    r = np.array(msg.ranges, np.float32)
    if inf_is_valid:
        r = np.where(np.isposinf(r), np.float32(msg.range_max - np.float32(1e-4)), r)
    with np.errstate(invalid="ignore"):
        keep = (r < msg.range_max) & (r >= msg.range_min)
    angle = msg.angle_min + msg.angle_increment * np.arange(len(r))
    r, angle = r[keep].astype(np.float64), angle[keep]
    return np.column_stack([r * np.cos(angle), r * np.sin(angle), np.zeros(len(r))])


def buffer_cloud(points: np.ndarray, source: dict) -> Observation:
    """ObservationBuffer::bufferCloud (observation_buffer.cpp): the origin is sensor_frame's (the cloud's
    frame when empty: base_footprint, at odom's origin here); points outside the source's
    [min_obstacle_height, max_obstacle_height] (defaults 0.0 and 0.0, ObstacleLayer::onInitialize) go.
    """
    lo, hi = float(source.get("min_obstacle_height", 0.0)), float(source.get("max_obstacle_height", 0.0))
    keep = (points[:, 2] <= hi) & (points[:, 2] >= lo)
    return Observation(points[keep], (0.0, 0.0, 0.0), source)


def obstacle_layer_update(costmap: Costmap, layer: dict, observations: list[Observation],
                          marking_current: bool = True) -> None:
    """ObstacleLayer::updateBounds (obstacle_layer.cpp): raytraceFreespace for every clearing observation
    first, then mark every marking observation's points. Its `current = current &&
    getMarkingObservations(...)` then `current = current && getClearingObservations(...)` short-circuits:
    while any marking buffer of the layer is stale (ObservationBuffer::isCurrent: not updated within
    expected_update_rate), the clearing observations are never fetched and nothing is cleared.
    """
    if marking_current:
        for obs in observations:
            if _flag(obs.source, "clearing"):
                raytrace_freespace(costmap, obs)
    lo, hi = float(layer.get("min_obstacle_height", 0.0)), float(layer.get("max_obstacle_height", 2.0))
    for obs in observations:
        if not _flag(obs.source, "marking"):
            continue
        max_r = float(obs.source.get("obstacle_max_range", 2.5))
        min_r = float(obs.source.get("obstacle_min_range", 0.0))
        for px, py, pz in obs.points:
            if pz < lo or pz > hi:                       # the layer's own height limits
                continue
            sq = (px - obs.origin[0]) ** 2 + (py - obs.origin[1]) ** 2 + (pz - obs.origin[2]) ** 2
            if sq >= max_r * max_r or sq < min_r * min_r:
                continue
            cell = costmap.world_to_map(px, py)
            if cell is not None:
                costmap.marked[cell[1] * costmap.size_x + cell[0]] = True


def raytrace_freespace(costmap: Costmap, obs: Observation) -> None:
    """ObstacleLayer::raytraceFreespace: from the origin to every point, clipped to the map, between
    cellDistance(raytrace_min_range) and cellDistance(raytrace_max_range) (defaults 0.0 and 3.0).
    """
    ox, oy = obs.origin[:2]
    start = costmap.world_to_map(ox, oy)
    if start is None:
        return
    map_end_x = costmap.origin_x + costmap.size_x * costmap.res
    map_end_y = costmap.origin_y + costmap.size_y * costmap.res
    max_cells = costmap.cell_distance(float(obs.source.get("raytrace_max_range", 3.0)))
    min_cells = costmap.cell_distance(float(obs.source.get("raytrace_min_range", 0.0)))
    for wx, wy, _ in obs.points:
        a, b = wx - ox, wy - oy
        if wx < costmap.origin_x:
            t = (costmap.origin_x - ox) / a
            wx, wy = costmap.origin_x, oy + b * t
        if wy < costmap.origin_y:
            t = (costmap.origin_y - oy) / b
            wx, wy = ox + a * t, costmap.origin_y
        if wx > map_end_x:
            t = (map_end_x - ox) / a
            wx, wy = map_end_x - .001, oy + b * t
        if wy > map_end_y:
            t = (map_end_y - oy) / b
            wx, wy = ox + a * t, map_end_y - .001
        end = costmap.world_to_map(wx, wy)
        if end is not None:
            costmap.raytrace_line(start[0], start[1], end[0], end[1], max_cells, min_cells)


def _flag(source: dict, key: str) -> bool:
    value = source.get(key, False)
    return value if isinstance(value, bool) else str(value).lower() == "true"


def load_layers(config: dict) -> tuple[dict, list[dict]]:
    """The costmap's parameters and its ObstacleLayer plugins (one per camera in the multi-camera example)."""
    params = config["local_costmap"]["local_costmap"]["ros__parameters"]
    return params, [params[name] for name in params["plugins"]
                     if params[name].get("plugin") == "nav2_costmap_2d::ObstacleLayer"]


def load_layer(config: dict) -> tuple[dict, dict]:
    params, layers = load_layers(config)
    return params, layers[0]


def emulate(params: dict, layers, messages: dict) -> Costmap:
    """One update of every ObstacleLayer from one message per observation source (observation_persistence 0).

    Sources on topics not in `messages` received nothing: stale when they have an expected_update_rate.
    The layers' costmaps combine into the master by maximum (combination_method 1, updateWithMax), so
    a cell is marked if any layer marked it and free if some layer cleared it and none marked it: one
    shared Costmap (cleared and marked kept apart) gives the same.
    """
    costmap = Costmap(params)
    for layer in [layers] if isinstance(layers, dict) else layers:
        observations, current = [], True
        for name in layer["observation_sources"].split():  # whitespace-separated, as ObstacleLayer::onInitialize
            source = layer[name]
            msg = messages.get(source["topic"])
            if msg is None:
                if _flag(source, "marking") and float(source.get("expected_update_rate", 0.0)) > 0:
                    current = False
                continue
            if source["data_type"] == "LaserScan":
                points = scan_to_cloud(msg, _flag(source, "inf_is_valid"))
            else:
                cloud = np.frombuffer(msg.data, OrganizedCloud.DTYPE)
                points = np.column_stack([cloud["x"], cloud["y"], cloud["z"]]).astype(np.float64)
                points = points[np.isfinite(points).all(axis=1)]
            observations.append(buffer_cloud(points, source))
        obstacle_layer_update(costmap, layer, observations, current)
    return costmap


# -- what the labels show, independently of the node's geometry -----------------------------------

class Truth:
    """Closed-form pinhole geometry of the test's camera (pitch only) and the labels' boundary."""

    def __init__(self, position, rpy, labels: np.ndarray) -> None:
        self.t = np.asarray(position, float)
        self.c, self.s = math.cos(rpy[1]), math.sin(rpy[1])
        drivable = np.isin(labels, CAMVID.ids(CAMVID.drivable))
        obstacle = np.isin(labels, CAMVID.ids(CAMVID.obstacle))
        vv, uu = np.mgrid[0:H, 0:W].astype(float)
        xy, ok = self.ground(uu, vv)
        blocked = ~drivable & ok
        # first blocked pixel from the bottom of each column
        rev = blocked[::-1]
        hit = rev.any(axis=0)
        self.row = np.where(hit, H - 1 - rev.argmax(axis=0), -1)
        cols = np.flatnonzero(hit)
        self.boundary_xy = xy[self.row[cols], cols]
        self.contact_xy = self.boundary_xy[obstacle[self.row[cols], cols]]

    def ground(self, u, v):
        """Ground point of pixel centres (u, v) and whether it lies within max_range."""
        xn, yn = (u - CX) / F, (v - CY) / F
        down = self.s + self.c * yn
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.t[2] / down
            x = self.t[0] + t * (self.c - self.s * yn)
            y = self.t[1] - t * xn
        ok = (down > 1e-12) & (np.hypot(x, y) <= MAX_RANGE)
        return np.stack([x, y], axis=-1), ok

    def pixel(self, x, y):
        """Pixel (u, v) of ground points and whether they lie in front of the camera."""
        dx, dy, dz = x - self.t[0], y - self.t[1], -self.t[2]
        xb, zb = self.c * dx - self.s * dz, self.s * dx + self.c * dz   # body frame (x forward, z up)
        front = xb > 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = CX + F * (-dy) / xb, CY + F * (-zb) / xb
        return u, v, front

    def judge(self, costmap: Costmap) -> dict:
        n = costmap.size_x
        iy, ix = np.divmod(np.arange(costmap.size_x * costmap.size_y), n)
        cx = costmap.origin_x + (ix + 0.5) * costmap.res
        cy = costmap.origin_y + (iy + 0.5) * costmap.res
        u, v, front = self.pixel(cx, cy)
        ur, vr = np.rint(u), np.rint(v)
        in_image = front & (ur >= 0) & (ur < W) & (vr >= 0) & (vr < H)
        col = np.where(in_image, ur, 0).astype(int)
        seen_free = in_image & (np.hypot(cx, cy) <= MAX_RANGE) & (vr > self.row[col])
        blind = front & (ur >= 0) & (ur < W) & (vr >= H)             # in front, below the image's bottom edge
        grid = lambda a: a.reshape(costmap.size_y, n)                 # noqa: E731
        allowed = _dilate(grid(seen_free)).ravel()
        interior = _erode(grid(seen_free)).ravel()
        boundary = np.zeros_like(seen_free)
        boundary[_cells(costmap, self.boundary_xy)] = True
        legit_marks = _dilate(grid(boundary)).ravel()
        marked = costmap.marked
        cleared = costmap.cleared & ~marked                          # marking comes after clearing
        near_mark = _dilate(grid(marked)).ravel()
        contacts = _cells(costmap, self.contact_xy)
        return dict(
            marked=int(marked.sum()), cleared=int(cleared.sum()),
            phantom=float((marked & ~legit_marks).sum() / max(marked.sum(), 1)),
            bad_clear=float((cleared & ~allowed).sum() / max(cleared.sum(), 1)),
            blind_clear=int((cleared & blind).sum()),
            contacts=len(contacts), contacts_marked=float(near_mark[contacts].mean()) if len(contacts) else 1.0,
            drivable_marked=float((marked & interior).sum() / max(interior.sum(), 1)),
            seen_free=int(seen_free.sum()), seen_free_cleared=float((cleared & seen_free).sum()
                                                                    / max(seen_free.sum(), 1)))


def _cells(costmap: Costmap, xy: np.ndarray) -> np.ndarray:
    ix = np.floor((xy[:, 0] - costmap.origin_x) / costmap.res).astype(int)
    iy = np.floor((xy[:, 1] - costmap.origin_y) / costmap.res).astype(int)
    ok = (ix >= 0) & (ix < costmap.size_x) & (iy >= 0) & (iy < costmap.size_y)
    return iy[ok] * costmap.size_x + ix[ok]


def _dilate(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(a, dy, 0), dx, 1)
    return out


def _erode(a: np.ndarray) -> np.ndarray:
    return ~_dilate(~a)


# -- the node over DDS --------------------------------------------------------------------------------

TOPICS = {"/segmentation/scan": "scan", "/segmentation/free_scan": "free_scan",
          "/segmentation/obstacles": "obstacles"}


@pytest.fixture(scope="module")
def outputs(module_ros_env, tmp_path_factory):
    """The node's scan, free_scan, obstacles and labels for two frames at each camera pose."""
    logs = tmp_path_factory.mktemp("nav2")
    position, rpy = POSES["level"]
    params = {"model": "camvid", "qos_reliability": "reliable", "qos_depth": 5, "base_frame": "base_footprint",
              "camera_position": str(position), "camera_rpy": str(rpy), "max_range": MAX_RANGE,
              "camera_info_wait": 0.5}
    proc = NodeProcess(node_args(params=params, remaps={"image": CAMERA, "camera_info": INFO}), logs / "node.log")
    probe = GeoProbe("nav2")
    probe.proc = proc
    frames = [read_rgb(p) for p in sorted((SAMPLES / "images").glob("*.png"))[4:6]]
    results = {}
    try:
        assert wait_for(lambda: not proc.alive() or (probe.pub_image.get_subscription_count() > 0
                                                      and probe.subs["free_scan"].get_publisher_count() > 0),
                        START_TIMEOUT, probe.spin) and proc.alive(), proc.output()
        for name, (position, rpy) in POSES.items():
            assert all(r.successful for r in probe.set_parameters(camera_position=position, camera_rpy=rpy))
            for rgb in frames:
                header = probe.header()
                info = camera_info(header, width=W, height=H, f=F, cx=CX, cy=CY)
                out = probe.wait(probe.send(rgb, info, header), ("labels", "scan", "free_scan", "obstacles"))
                results.setdefault(name, []).append(out)
    finally:
        probe.close()
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output()
    return results


def _messages(out: dict, namespace: str = "") -> dict:
    return {namespace + topic: out[key] for topic, key in TOPICS.items()}


@pytest.mark.parametrize("pose", list(POSES))
def test_the_example_config_marks_boundaries_and_clears_only_seen_ground(outputs, pose):
    for path, namespace in CONFIGS[pose]:
        params, layers = load_layers(yaml.safe_load(path.read_text()))
        for out in outputs[pose]:
            truth = Truth(*POSES[pose], to_array(out["labels"]))
            result = truth.judge(emulate(params, layers, _messages(out, namespace)))
            print(pose, path.name, namespace, result)
            # The pitched camera sees the road of these frames only from 2.9 to about 3.2 m: few cells.
            assert result["marked"] > 20 and result["cleared"] > (200 if pose == "level" else 5), result
            assert result["phantom"] <= 0.02, result
            assert result["bad_clear"] <= 0.02, result
            assert result["contacts_marked"] >= 0.70, result
            assert result["drivable_marked"] <= 0.02, result
            # the config's raytrace_min_range covers this camera's blind strip
            free_source = next(v for layer in layers for v in layer.values() if isinstance(v, dict)
                               and v.get("topic") == namespace + "/segmentation/free_scan")
            assert out["free_scan"].range_min <= float(free_source["raytrace_min_range"])
    # The pitched camera's view ends short of max_range: its scan has no +inf, its free_scan ends there.
    if pose == "pitched":
        for out in outputs[pose]:
            assert not np.isposinf(np.array(out["scan"].ranges)).any()
            assert np.nanmax(np.array(out["free_scan"].ranges)) < 12.0


def test_the_former_config_fails_the_same_check(outputs):
    """The scan as one marking and clearing source with inf_is_valid (the former example): a phantom wall
    near max_range and the blind strip cleared. The criteria above must catch both.
    """
    config = yaml.safe_load(CONFIG.read_text())
    params, layer = load_layer(config)
    former = copy.deepcopy(layer)
    former["observation_sources"] = "segmentation_scan segmentation_obstacles"
    former["segmentation_scan"].update(clearing=True, inf_is_valid=True, raytrace_min_range=0.0,
                                       raytrace_max_range=30.0, obstacle_max_range=30.0)
    out = outputs["level"][0]
    truth = Truth(*POSES["level"], to_array(out["labels"]))
    result = truth.judge(emulate(params, former, _messages(out)))
    assert np.isposinf(np.array(out["scan"].ranges)).any()
    assert result["phantom"] > 0.02 and result["bad_clear"] > 0.02 and result["blind_clear"] > 100, result


def test_one_layer_for_every_camera_clears_nothing_while_a_camera_is_silent(outputs):
    """Why the multi-camera example has one ObstacleLayer per camera: merged into one layer, the silent
    cameras' stale marking sources stop the clearing of the camera that does send (ObstacleLayer::updateBounds).
    """
    params, layers = load_layers(yaml.safe_load(MULTI_CONFIG.read_text()))
    merged = {"observation_sources": " ".join(f"{layer['scan']['topic'].split('/')[1]}_{name}"
                                              for layer in layers for name in layer["observation_sources"].split()),
              "min_obstacle_height": -0.5, "max_obstacle_height": 2.0}
    for layer in layers:
        for name in layer["observation_sources"].split():
            merged[f"{layer['scan']['topic'].split('/')[1]}_{name}"] = layer[name]
    out = outputs["level"][0]
    truth = Truth(*POSES["level"], to_array(out["labels"]))
    apart = truth.judge(emulate(params, layers, _messages(out, "/front")))
    together = truth.judge(emulate(params, merged, _messages(out, "/front")))
    assert apart["cleared"] > 200 and together["cleared"] == 0 and together["marked"] == apart["marked"]
