# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The ground-plane geometry against a scene whose truth is known (ROS-free).

A camera at a known pose over flat ground, upright boxes at known places, the label
image rendered by forward projection (synthetic_scene.py); the grid, the scan and the
obstacle points must put every box where it is, for several poses and lenses.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from synthetic_scene import CAR, ROAD, WALL, Box, first_hit_range, render

from seg_perception.geometry import free_space as fs
from seg_perception.geometry.camera_model import CameraModel, CameraModelError
from seg_perception.geometry.camera_pose import (
    CameraPose,
    CameraPoseError,
    rotation_from_rpy,
)
from seg_perception.geometry.ground_projection import (
    GridSpec,
    GroundProjection,
    GroundProjectionError,
)
from seg_perception.inference.masks import group_lut

W, H = 640, 480
K = [500.0, 0, 320.0, 0, 500.0, 240.0, 0, 0, 1]
GRID = GridSpec(resolution=0.1, x_range=(0.0, 40.0), y_range=(-15.0, 15.0))
BOXES = [Box(8.0, 10.0, -1.0, 1.0), Box(7.0, 8.0, 1.2, 2.5), Box(9.0, 10.0, -4.0, -2.0, label=WALL)]
OBSTACLE_LUT = group_lut([CAR])
LENSES = {
    "pinhole": ("plumb_bob", []),
    "plumb_bob": ("plumb_bob", [-0.28, 0.09, 0.001, -0.0008, -0.01]),
    "rational_polynomial": ("rational_polynomial", [0.2, -0.05, 0.0005, 0.0, 0.0, 0.25, -0.02, 0.0]),
    "equidistant": ("equidistant", [0.05, -0.01, 0.002, 0.0]),
}
# (position xyz, rpy) of the camera body in base_frame
POSES = {
    "level": ([1.5, 0.0, 1.4], [0.0, 0.05, 0.0]),
    "pitched_rolled_yawed": ([1.2, 0.3, 1.6], [0.03, 0.12, 0.06]),
    "low_yawed_right": ([2.0, -0.2, 1.0], [-0.02, 0.03, -0.03]),
    "high": ([0.5, 0.0, 2.4], [0.0, 0.2, 0.0]),
}


def _footprint_distance(xy: np.ndarray, box: Box) -> np.ndarray:
    """Distance of points (N, 2) from the box's footprint rectangle (0 inside)."""
    dx = np.maximum(np.maximum(box.x0 - xy[:, 0], xy[:, 0] - box.x1), 0)
    dy = np.maximum(np.maximum(box.y0 - xy[:, 1], xy[:, 1] - box.y1), 0)
    return np.hypot(dx, dy)


def _depth_inside(xy: np.ndarray, box: Box) -> np.ndarray:
    """How far points (N, 2) lie inside the box's footprint (0 outside)."""
    depth = np.minimum.reduce([xy[:, 0] - box.x0, box.x1 - xy[:, 0], xy[:, 1] - box.y0, box.y1 - xy[:, 1]])
    return np.maximum(depth, 0.0)


def _scene(lens: str, pose_name: str):
    model, d = LENSES[lens]
    camera = CameraModel.from_camera_info(width=W, height=H, k=K, d=d, distortion_model=model)
    pose = CameraPose.from_position_rpy(*POSES[pose_name])
    labels = render(camera, pose, BOXES)
    proj = GroundProjection(camera, pose, max_range=30.0, grid=GRID)
    boundary = fs.find_boundary(proj, labels, group_lut([ROAD])[labels])
    return camera, pose, labels, proj, boundary


@pytest.mark.parametrize("lens,pose_name", [("pinhole", "level"), ("plumb_bob", "pitched_rolled_yawed"),
                                            ("rational_polynomial", "low_yawed_right"),
                                            ("equidistant", "high"), ("pinhole", "pitched_rolled_yawed")])
def test_grid_scan_and_obstacles_put_every_box_where_it_is(lens, pose_name):
    camera, pose, labels, proj, boundary = _scene(lens, pose_name)
    cell = GRID.resolution

    # Grid: lethal cells lie on the cars, boundary-cost cells on the wall, within one cell.
    grid = fs.occupancy(proj, boundary, OBSTACLE_LUT, boundary_cost=60)
    centres = GRID.cell_centres()
    lethal = centres[grid == fs.LETHAL]
    walls = centres[grid == 60]
    cars = [b for b in BOXES if b.label == CAR]
    assert len(lethal) > 20 and len(walls) > 5
    car_distance = np.min([_footprint_distance(lethal, b) for b in cars], axis=0)
    near_car = car_distance <= cell * math.sqrt(2)
    assert near_car.mean() >= 0.75, lethal[~near_car]
    # The rest come from columns at a box's silhouette that see only its top, whose ground point
    # lies behind the box (the first-blocked-pixel rule): never in front of an obstacle, where
    # they would cut free road short.
    _assert_behind_first_box(lethal[car_distance > 2 * cell], pose.t[:2])
    wall_distance = _footprint_distance(walls, BOXES[2])
    assert (wall_distance <= cell * math.sqrt(2)).mean() >= 0.75
    _assert_behind_first_box(walls[wall_distance > 2 * cell], pose.t[:2])
    for box in cars:
        # Each car's near face (x = x0) is marked along its visible width, within one cell.
        on_face = lethal[(np.abs(lethal[:, 0] - box.x0) <= 1.5 * cell) & (lethal[:, 1] >= box.y0)
                         & (lethal[:, 1] <= box.y1)]
        covered = np.unique(np.floor(on_face[:, 1] / cell))
        assert len(covered) >= 0.8 * (box.y1 - box.y0) / cell, (box, len(covered))
    # Free cells: seen road, never inside a box, and the road just in front of the car ahead is free.
    free = centres[grid == fs.FREE]
    for b in BOXES:  # (a cell whose centre is within a cell of a face may be seen below its boundary pixel)
        assert (_depth_inside(free, b) <= 1.5 * cell).all(), free[_depth_inside(free, b) > 1.5 * cell]
    ahead = GRID.cell_index(np.array([[BOXES[0].x0 - 1.0, 0.05]]))[0]
    assert grid[ahead] == fs.FREE
    # Behind the car ahead (occluded) is unknown, not free.
    behind = GRID.cell_index(np.array([[BOXES[0].x1 + 1.0, 0.05]]))[0]
    assert grid[behind] == fs.UNKNOWN

    # Scan: beams pointing well inside a box's angular span measure it within 2 %.
    ranges = fs.scan_ranges(proj, boundary)
    bearings = proj.scan_angle_min + proj.scan_increment * np.arange(proj.scan_beams)
    checked = 0
    for b in BOXES:
        corners = np.array([[b.x0, b.y0], [b.x0, b.y1], [b.x1, b.y0], [b.x1, b.y1]])
        ang = np.arctan2(corners[:, 1], corners[:, 0])
        lo, hi = ang.min(), ang.max()
        inner = (bearings > lo + 0.1 * (hi - lo)) & (bearings < hi - 0.1 * (hi - lo))
        for i in np.flatnonzero(inner):
            truth = first_hit_range(bearings[i], BOXES)
            assert abs(ranges[i] - truth) <= 0.02 * truth, (b, bearings[i], ranges[i], truth)
            checked += 1
    assert checked > 30
    # Beams clear of every box see road out to max_range: +inf (Nav2's inf_is_valid clears them).
    spans = [np.arctan2(np.array([b.y0, b.y1, b.y0, b.y1]), np.array([b.x0, b.x0, b.x1, b.x1])) for b in BOXES]
    clear = np.ones(proj.scan_beams, bool)
    for s in spans:
        clear &= (bearings < s.min() - 0.05) | (bearings > s.max() + 0.05)
    assert np.isinf(ranges[clear & ~np.isnan(ranges)]).mean() > 0.9
    # Every finite range is a box: on one, or beyond them (silhouette columns).
    finite = np.isfinite(ranges)
    points = np.column_stack([ranges[finite] * np.cos(bearings[finite]), ranges[finite] * np.sin(bearings[finite])])
    distance = np.min([_footprint_distance(points, b) for b in BOXES], axis=0)
    _assert_behind_first_box(points[distance > 2 * cell], pose.t[:2])

    # Obstacle points: the boundary points on cars, on the cars.
    xy, classes = fs.obstacle_points(boundary, OBSTACLE_LUT)
    assert len(xy) > 20 and set(classes.tolist()) == {CAR}
    distance = np.min([_footprint_distance(xy, b) for b in cars], axis=0)
    assert (distance <= cell).mean() >= 0.75
    _assert_behind_first_box(xy[distance > 2 * GRID.resolution], pose.t[:2])


def _assert_behind_first_box(points: np.ndarray, camera_xy) -> None:
    """Points that are not on a box come from columns at a box's silhouette that see only its
    top (the first-blocked-pixel rule): they lie beyond the boxes, never nearer to the camera
    than the nearest box, where they would cut free road short.
    """
    corners = np.array([[x, y] for b in BOXES
                        for x in np.linspace(b.x0, b.x1, 11) for y in np.linspace(b.y0, b.y1, 11)])
    nearest = np.hypot(*(corners - camera_xy).T).min()
    distances = np.hypot(points[:, 0] - camera_xy[0], points[:, 1] - camera_xy[1])
    assert (distances >= nearest - GRID.resolution).all(), points[distances < nearest - GRID.resolution]


def test_ground_points_of_pixels_match_forward_projection():
    """Unprojecting a pixel and projecting its ground point back lands on the same pixel."""
    for lens in LENSES:
        model, d = LENSES[lens]
        camera = CameraModel.from_camera_info(width=W, height=H, k=K, d=d, distortion_model=model)
        pose = CameraPose.from_position_rpy(*POSES["pitched_rolled_yawed"])
        proj = GroundProjection(camera, pose, max_range=30.0, grid=GRID)
        vs, us = np.nonzero(proj.valid)
        pick = np.linspace(0, len(vs) - 1, 500).astype(int)
        ground = np.column_stack([proj.xy[vs[pick], us[pick]], np.zeros(len(pick))]).astype(np.float64)
        px = camera.project((ground - pose.t) @ pose.R)
        err = np.hypot(px[:, 0] - us[pick], px[:, 1] - vs[pick])
        assert err.max() < 0.01, (lens, err.max())


def test_range_error_per_row_follows_the_square_law():
    camera = CameraModel.from_camera_info(width=W, height=H, k=K)
    pose = CameraPose.from_position_rpy([0.0, 0.0, 1.5], [0.0, 0.0, 0.0])
    proj = GroundProjection(camera, pose, max_range=40.0, grid=GRID)
    # Straight ahead, level camera: row v sees the ground at X = f h / (v - cy).
    col = 320
    xs = proj.xy[:, col, 0].astype(np.float64)
    for X in (10.0, 20.0):
        v = int(np.nanargmin(np.abs(xs - X)))
        measured = xs[v - 1] - xs[v]
        assert measured == pytest.approx(proj.range_error_per_row(xs[v]), rel=0.12)


def test_camera_pose_conventions():
    # Positive pitch looks down: the optical axis (z) has a negative z component in base_frame.
    pose = CameraPose.from_position_rpy([0, 0, 1.0], [0, 0.3, 0])
    axis = pose.R @ np.array([0, 0, 1.0])
    assert axis[2] == pytest.approx(-math.sin(0.3)) and axis[0] == pytest.approx(math.cos(0.3))
    # Optical x is right (base -y) and y is down for a level camera.
    level = CameraPose.from_position_rpy([0, 0, 1.0], [0, 0, 0])
    np.testing.assert_allclose(level.R @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(level.R @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    # Positive yaw turns the camera to the left (+y).
    left = CameraPose.from_position_rpy([0, 0, 1.0], [0, 0, 0.5])
    assert (left.R @ [0, 0, 1.0])[1] > 0
    # Fixed-axis rpy: R = Rz(yaw) Ry(pitch) Rx(roll).
    def axis_rotation(axis, a):
        c, s = math.cos(a), math.sin(a)
        return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
                "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]
    np.testing.assert_allclose(rotation_from_rpy(0.1, 0.2, 0.3),
                               axis_rotation("z", 0.3) @ axis_rotation("y", 0.2) @ axis_rotation("x", 0.1), atol=1e-12)
    # A TF transform base <- optical of a level camera: quaternion of the optical axes (x right, y down,
    # z forward) in base_frame is (-0.5, 0.5, -0.5, 0.5).
    tf = CameraPose.from_transform([0, 0, 1.0], [-0.5, 0.5, -0.5, 0.5])
    np.testing.assert_allclose(tf.R, level.R, atol=1e-12)


@pytest.mark.parametrize("position,rpy,match", [
    ([1.0, 0.0, -0.5], [0, 0.1, 0], "under the\\s+ground|at or under"),
    ([1.0, 0.0, 0.0], [0, 0.1, 0], "at or under"),
    ([1.0, 0.0, float("nan")], [0, 0.1, 0], "NaN"),
    ([1.0, 0.0], [0, 0.1, 0], "3 numbers"),
])
def test_bad_extrinsics_are_named(position, rpy, match):
    with pytest.raises(CameraPoseError, match=match):
        CameraPose.from_position_rpy(position, rpy)


def test_a_camera_pitched_up_sees_no_ground():
    camera = CameraModel.from_camera_info(width=W, height=H, k=K)
    pose = CameraPose.from_position_rpy([0, 0, 1.5], [0, -0.8, 0])
    with pytest.raises(GroundProjectionError, match="above the horizon"):
        GroundProjection(camera, pose, max_range=30.0, grid=GRID)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=[0.0] * 9), "focal lengths"),
    (dict(k=[500, 0, 320, 0, float("nan"), 240, 0, 0, 1]), "NaN"),
    (dict(k=[500, 0, 320, 0, 500, 240]), "9"),
    (dict(d=[0.1, 0.0, 0.0, 0.0, 0.0], distortion_model="kannala_brandt"), "not supported"),
    (dict(d=[0.1, 0.0, 0.0], distortion_model="plumb_bob"), "takes 5"),
    (dict(roi=(600, 0, 200, 100)), "ROI"),
    (dict(width=0), "not positive"),
])
def test_bad_camera_info_is_named(kwargs, match):
    args = dict(width=W, height=H, k=K)
    args.update(kwargs)
    with pytest.raises(CameraModelError, match=match):
        CameraModel.from_camera_info(**args)


def test_camera_info_scaling_with_binning_and_roi():
    full = dict(width=1280, height=960, k=[1000.0, 0, 640.0, 0, 1000.0, 480.0, 0, 0, 1],
                d=[-0.2, 0.05, 0, 0, 0], distortion_model="plumb_bob")
    # ROI then 2x binning: the published image is 320x240 (image_geometry's size rule); a super-pixel
    # lies at its sensor pixels' mean centre: cx = (640 - 320 + 0.5) / 2 - 0.5 (image_geometry: 160).
    cam = CameraModel.from_camera_info(**full, binning_x=2, binning_y=2, roi=(320, 240, 640, 480))
    assert (cam.width, cam.height) == (320, 240)
    np.testing.assert_allclose(cam.K, [[500, 0, 159.75], [0, 500, 119.75], [0, 0, 1]])
    cam.check_image_size(320, 240)
    with pytest.raises(CameraModelError, match="640x480"):
        cam.check_image_size(640, 480)
    # The same sensor point is seen at corresponding pixels in the full and the binned image.
    fullcam = CameraModel.from_camera_info(**full)
    ray = fullcam.undistort(np.array([[900.0, 700.0]]))
    ray2 = cam.undistort(np.array([[(900.0 - 320 + 0.5) / 2 - 0.5, (700.0 - 240 + 0.5) / 2 - 0.5]]))
    np.testing.assert_allclose(ray, ray2, atol=1e-9)
    # Resized for the network (pixel centres onto pixel centres) and back.
    small = cam.scaled(160, 120)
    assert (small.width, small.height) == (160, 120)
    np.testing.assert_allclose(small.K[0], [250, 0, (159.75 + 0.5) * 0.5 - 0.5])
    np.testing.assert_allclose(small.undistort(np.array([[79.5, 59.5]])), cam.undistort(np.array([[159.5, 119.5]])),
                               atol=1e-9)
    assert small.scaled(320, 240).K == pytest.approx(cam.K)
    # P follows K.
    np.testing.assert_allclose(small.P[:, :3], small.K)


def test_calibration_files_load_and_bad_ones_are_named(tmp_path):
    from seg_perception.geometry.calibration import CalibrationError, load_calibration
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    for name in ("camvid", "idd_lite"):
        cal = load_calibration(repo / "config" / "cameras" / f"{name}.yaml")
        assert cal.camera.K[0, 0] > 0 and cal.pose.t[2] > 1.0
    cal = load_calibration(repo / "config" / "cameras" / "camvid.yaml", rpy=[0.0, 0.1, 0.0])
    assert cal.rpy == (0.0, 0.1, 0.0)
    assert cal.for_image(960, 720).K[0, 0] == pytest.approx(2 * cal.camera.K[0, 0])
    bad = tmp_path / "bad.yaml"
    for text, phrase in [("image_width: 10\n", "missing 'image_height'"),
                         ("image_width: 10\nimage_height: 10\ncamera_matrix: {data: [1, 2]}\n", "camera_matrix has 2"),
                         ("image_width: 10\nimage_height: 10\ncamera_matrix: {data: [0,0,0,0,0,0,0,0,1]}\n",
                          "focal lengths"),
                         ("image_width: 10\nimage_height: 10\ncamera_matrix: {data: [5,0,5,0,5,5,0,0,1]}\n",
                          "camera_position and camera_rpy"),
                         ("[1, 2", "YAML")]:
        bad.write_text(text)
        with pytest.raises(CalibrationError, match=phrase):
            load_calibration(bad)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "none.yaml")


def test_predict_bev_draws_the_grid_and_reports_the_free_distance(tmp_path, capsys):
    """`seg-perception predict --bev` on real frames: a picture per frame, the free distance ahead, and a
    calibration that cannot see the ground refused with the reason.
    """
    from seg_perception.cli.main import main
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    images = repo / "sample_data" / "camvid_val" / "images"
    code = main(["predict", "--input", str(images), "--output", str(tmp_path / "out"), "--bev",
                 str(repo / "config" / "cameras" / "camvid.yaml"), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    distances = [float(v) for v in __import__("re").findall(r"free distance ahead (\d+\.\d) m", text)]
    assert len(distances) == len(list(images.glob("*.png"))) and all(3.0 < d < 40.0 for d in distances)
    pictures = sorted((tmp_path / "out" / "bev").glob("*.png"))
    assert len(pictures) == len(distances)
    import cv2
    picture = cv2.imread(str(pictures[0]))
    assert picture.shape == (360, 2 * 480 + 270, 3)
    code = main(["predict", "--input", str(images), "--output", str(tmp_path / "up"), "--bev",
                 str(repo / "config" / "cameras" / "camvid.yaml"), "--camera-rpy", "0", "-0.6", "0", "--no-progress"])
    assert code == 2 and "above the horizon" in capsys.readouterr().err


def test_fuzzed_camera_info_and_extrinsics_raise_only_the_documented_errors():
    """Thousands of generated CameraInfo fields and poses: a model, or CameraModelError / CameraPoseError /
    GroundProjectionError; nothing else escapes.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-10**6, 10**6))

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(width=st.integers(-5, 5000), height=st.integers(-5, 5000), k=st.lists(numbers, min_size=0, max_size=12),
           d=st.lists(numbers, max_size=10), model=st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant",
                                                                       "", "none", "kannala_brandt", "x" * 50]),
           binning=st.integers(-2, 8), roi=st.tuples(*[st.integers(-10, 6000)] * 4),
           position=st.lists(numbers, min_size=0, max_size=4), rpy=st.lists(numbers, min_size=3, max_size=3))
    def check(width, height, k, d, model, binning, roi, position, rpy):
        try:
            camera = CameraModel.from_camera_info(width=width, height=height, k=k, d=d, distortion_model=model,
                                                  binning_x=binning, binning_y=binning, roi=roi)
        except CameraModelError:
            return
        assert camera.width > 0 and camera.height > 0 and np.isfinite(camera.K).all()
        try:
            pose = CameraPose.from_position_rpy(position, rpy)
        except CameraPoseError:
            return
        small = camera.scaled(min(camera.width, 64), min(camera.height, 48))
        try:
            GroundProjection(small, pose, max_range=30.0, grid=GridSpec(resolution=0.5))
        except GroundProjectionError:
            return

    check()


def test_fuzzed_node_parameters_raise_only_value_errors():
    """The node's runtime parameter validation on generated values: Settings, or a ValueError that names
    the parameter; nothing else escapes.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from seg_perception.classes import CAMVID
    from seg_perception.ros.node import PARAMETERS, RUNTIME_PARAMETERS, build_settings
    defaults = {n: (v[1] if v[1] is not None else []) for n, v in PARAMETERS.items() if n in RUNTIME_PARAMETERS}
    anything = st.one_of(st.floats(), st.integers(-10**9, 10**9), st.text(max_size=12), st.booleans(),
                         st.lists(st.floats(), max_size=4), st.lists(st.integers(-300, 300), max_size=40),
                         st.lists(st.sampled_from(list(CAMVID.names) + ["Unicorn", ""]), max_size=4))

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(changes=st.dictionaries(st.sampled_from(sorted(defaults)), anything, max_size=4))
    def check(changes):
        values = dict(defaults, **changes)
        try:
            build_settings(values, CAMVID)
        except ValueError as exc:
            assert str(exc)

    check()


# -- lens regressions (issue #20) ----------------------------------------------------------------------

def test_equidistant_pixels_90_degrees_off_axis_get_no_ray_not_a_reversed_one():
    """OpenCV's fisheye undistortion clips theta at pi/2 and returns x/z of a ray behind the lens: on this
    1280x960, f = 390 lens (a field of view past 180 deg) a level camera then saw 'ground' 1.29 m away.
    """
    f = 390.0
    cam = CameraModel.from_camera_info(width=1280, height=960, k=[f, 0, 639.5, 0, f, 479.5, 0, 0, 1],
                                       d=[0.0, 0.0, 0.0, 0.0], distortion_model="equidistant")
    assert cam.distortion_model == "equidistant"           # zero D: still a fisheye, not a pinhole
    u = np.arange(1280.0)
    theta = np.abs(u - 639.5) / f                          # zero D: theta = r / f
    rays = cam.undistort(np.column_stack([u, np.full_like(u, 479.5)])).reshape(-1, 2)
    past = theta >= math.pi / 2 - 1e-6
    assert past.sum() > 40 and np.isnan(rays[past]).all()
    np.testing.assert_allclose(np.abs(rays[~past, 0]), np.tan(theta[~past]), rtol=1e-6, atol=1e-9)
    # A level camera on it over open road: the frame is road inside the lens's 90 deg circle and dark
    # (not drivable) beyond it. Reversed rays put those dark pixels on the ground around the car, a
    # boundary in most columns; without rays they are no ground, and there is no boundary at all.
    vv, uu = np.mgrid[0:960, 0:1280].astype(np.float64)
    outside = np.hypot(uu - 639.5, vv - 479.5) / f >= math.pi / 2
    labels = np.where(outside, 1, 0).astype(np.uint8)
    proj = GroundProjection(cam, CameraPose.from_position_rpy([0.0, 0.0, 1.4], [0.0, 0.0, 0.0]), max_range=30.0,
                            grid=GRID)
    assert not proj.valid[outside].any()
    boundary = fs.find_boundary(proj, labels, (labels == 0).astype(np.uint8))
    assert not boundary.hit.any(), np.flatnonzero(boundary.hit).size


def test_strong_barrel_undistortion_converges_to_a_thousandth_of_a_pixel():
    """k1 = -0.37 on a 2048x1536 camera: OpenCV's 50 fixed-point iterations leave pixels off by several
    pixels at the corners; Newton's method on the forward model reaches 1e-3 px everywhere.
    """
    cam = CameraModel.from_camera_info(width=2048, height=1536, k=[1000.0, 0, 1023.5, 0, 1000.0, 767.5, 0, 0, 1],
                                       d=[-0.37, 0.12, 0.0, 0.0, 0.0], distortion_model="plumb_bob")
    vv, uu = np.mgrid[0:1536:7, 0:2048:7].astype(np.float64)
    pixels = np.column_stack([uu.ravel(), vv.ravel()])
    rays = cam.undistort(pixels).reshape(-1, 2)
    assert np.isfinite(rays).all()
    back = cam.project(np.column_stack([rays, np.ones(len(rays))]))
    assert np.abs(back - pixels).max() <= 1e-3
    fixed_point = cv2.undistortPoints(pixels.reshape(-1, 1, 2), cam.K, cam.D,
                                      criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9))
    off = cam.project(np.column_stack([fixed_point.reshape(-1, 2), np.ones(len(rays))]))
    assert np.abs(off - pixels).max() > 1.0                # the failing case this guards against


def test_binning_and_resizing_share_one_convention():
    """A 2x-binned image and the full image resized to half size are the same pixels: one camera model."""
    full = CameraModel.from_camera_info(width=1280, height=960, k=[1000.0, 0, 640.3, 0, 1001.0, 480.7, 0, 0, 1],
                                        d=[-0.2, 0.05, 0.001, -0.001, 0.0], distortion_model="plumb_bob")
    binned = CameraModel.from_camera_info(width=1280, height=960, k=full.K.ravel(), d=full.D,
                                          distortion_model="plumb_bob", binning_x=2, binning_y=2)
    np.testing.assert_allclose(binned.K, full.scaled(640, 480).K, atol=1e-12)
    # super-pixel j is seen where its two sensor pixels' centres average: 2 j + 0.5
    j = np.array([[10.0, 20.0], [300.0, 200.0]])
    np.testing.assert_allclose(binned.undistort(j), full.undistort(2 * j + 0.5), atol=1e-12)


@pytest.mark.parametrize("model, d", [("plumb_bob", []), ("plumb_bob", [-0.2, 0.05, 0.001, -0.001, 0.0]),
                                      ("rational_polynomial", [-0.2, 0.05, 0.001, -0.001, 0.0, 0.01, 0.0, 0.0]),
                                      ("equidistant", [0.05, -0.01, 0.002, 0.0])])
def test_skewed_k_is_honoured_both_ways(model, d):
    """K[0,1] != 0 moves every pixel by skew * y; undistort and project must agree on it for every lens."""
    k = [800.0, 4.0, 640.0, 0.0, 790.0, 360.0, 0.0, 0.0, 1.0]
    cam = CameraModel.from_camera_info(width=1280, height=720, k=k, d=d, distortion_model=model)
    plain = CameraModel.from_camera_info(width=1280, height=720, k=[800.0, 0, 640.0, 0, 790.0, 360.0, 0, 0, 1], d=d,
                                         distortion_model=model)
    vv, uu = np.mgrid[0:720:37, 0:1280:41].astype(np.float64)
    pixels = np.column_stack([uu.ravel(), vv.ravel()])
    rays = cam.undistort(pixels).reshape(-1, 2)
    back = cam.project(np.column_stack([rays, np.ones(len(rays))]))
    np.testing.assert_allclose(back, pixels, atol=1e-3)
    # the skew is not ignored: the skew-free camera sees a pixel 4 * y_d to the right
    shifted = plain.project(np.column_stack([rays, np.ones(len(rays))]))
    assert np.abs(shifted[:, 0] - pixels[:, 0]).max() > 1.0


def test_a_camera_facing_back_gets_a_contiguous_scan():
    """A rear camera (yaw pi) sees bearings on both sides of +-pi: wrapped, its beams spread over the whole
    circle (spacing 0.0098 instead of 0.0017 rad, most beams NaN); unwrapped, it gets the front camera's scan.
    """
    camera = CameraModel.from_camera_info(width=640, height=360, k=[500.0, 0, 319.5, 0, 500.0, 179.5, 0, 0, 1])
    front = GroundProjection(camera, CameraPose.from_position_rpy([0.7, 0.0, 1.0], [0.0, 0.1, 0.0]),
                             max_range=30.0, grid=GRID)
    rear = GroundProjection(camera, CameraPose.from_position_rpy([-0.7, 0.0, 1.0], [0.0, 0.1, math.pi]),
                            max_range=30.0, grid=GRID)
    assert rear.scan_beams == front.scan_beams == 640
    assert rear.scan_increment == pytest.approx(front.scan_increment, rel=1e-4)
    assert rear.scan_angle_min == pytest.approx(math.pi + front.scan_angle_min, abs=1e-4)
    labels = np.zeros((360, 640), np.uint8)
    labels[:150] = 1                                  # a wall across the view
    drivable = (labels == 0).astype(np.uint8)
    for proj in (front, rear):
        ranges = fs.scan_ranges(proj, fs.find_boundary(proj, labels, drivable))
        assert np.isnan(ranges).sum() <= 2
    # the rear scan's beams point back: their end points lie behind the car
    ranges = fs.scan_ranges(rear, fs.find_boundary(rear, labels, drivable))
    angles = rear.scan_angle_min + rear.scan_increment * np.arange(rear.scan_beams)
    assert (ranges * np.cos(angles) < -0.7)[np.isfinite(ranges)].all()


def test_the_scan_free_distance_reads_nan_as_unseen():
    """free_space_monitor's scan input: a boundary in the corridor ends the distance; +inf down the corridor
    is free to range_max; a scan of NaN (a camera whose view ends short of range_max) frees nothing.
    """
    n = 101
    angle_min, inc = -0.5, 0.01
    kw = dict(corridor_width=2.0, corridor_start=1.0)
    ranges = np.full(n, np.inf)
    assert fs.scan_free_distance(ranges, angle_min, inc, 30.0, **kw) == pytest.approx(29.0)
    ranges[50] = 12.0                                   # straight ahead
    assert fs.scan_free_distance(ranges, angle_min, inc, 30.0, **kw) == pytest.approx(11.0)
    assert fs.scan_free_distance(np.full(n, np.nan), angle_min, inc, 30.0, **kw) == 0.0
