# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""ROS messages of the planner-facing outputs, built from the geometry core's arrays."""
from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Pose
from nav_msgs.msg import MapMetaData, OccupancyGrid
from sensor_msgs.msg import CameraInfo, LaserScan, PointCloud2, PointField
from std_msgs.msg import Header

from ..geometry.camera_model import CameraModel
from ..geometry.free_space import OrganizedCloud
from ..geometry.ground_projection import GridSpec, GroundProjection
from .ros_image import packed

#: PointCloud2 fields of both clouds (16 bytes a point, little-endian), as OrganizedCloud lays them out.
CLOUD_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="label", offset=12, datatype=PointField.UINT8, count=1),
    PointField(name="confidence", offset=13, datatype=PointField.UINT8, count=1),
]


def camera_info(camera: CameraModel, header: Header) -> CameraInfo:
    """The CameraInfo of the published label images: their size, K and P scaled, ROI and binning folded in."""
    return CameraInfo(header=header, width=camera.width, height=camera.height,
                      distortion_model=camera.distortion_model, d=[float(v) for v in camera.D],
                      k=[float(v) for v in camera.K.reshape(-1)], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                      p=[float(v) for v in camera.P.reshape(-1)])


def cloud(points: np.ndarray, header: Header, *, organized: bool, data: array.array | None = None) -> PointCloud2:
    """A PointCloud2 of OrganizedCloud.DTYPE points: (rows, cols) organized, or (N,) unorganized.

    `data`, when given, is the points' own array.array('B') buffer, sent without a copy.
    """
    height, width = points.shape if organized else (1, points.shape[0])
    # check_fields=True: only then does the generated setter keep an array.array('B') as it is; without
    # it, it copies the 15 MB of a 1280x720 cloud (1.8 ms) on every frame
    return PointCloud2(header=header, height=height, width=width, fields=CLOUD_FIELDS, is_bigendian=False,
                       point_step=OrganizedCloud.DTYPE.itemsize, row_step=OrganizedCloud.DTYPE.itemsize * width,
                       data=data if data is not None else packed(points), is_dense=not organized, check_fields=True)


def organized_cloud(cloud_buffer: OrganizedCloud, labels: np.ndarray, confidence: np.ndarray | None,
                    header: Header) -> PointCloud2:
    """segmentation/points for this frame: the cached ground points with the frame's labels and confidences."""
    return cloud(cloud_buffer.fill(labels, confidence), header, organized=True, data=cloud_buffer.data)


def obstacle_cloud(xy: np.ndarray, labels: np.ndarray, confidence: np.ndarray, z: float,
                   header: Header) -> PointCloud2:
    points = np.zeros(len(xy), OrganizedCloud.DTYPE)
    points["x"], points["y"], points["z"] = xy[:, 0], xy[:, 1], z
    points["label"], points["confidence"] = labels, confidence
    return cloud(points, header, organized=False)


#: free_scan's range_max lies this far beyond max_range: laser_geometry keeps only ranges below
#: range_max (laser_geometry.cpp, LaserProjection::projectLaser_), and a beam that sees ground out
#: to max_range has the range max_range.
FREE_SCAN_RANGE_MARGIN = 0.01


def scan(ranges: np.ndarray, proj: GroundProjection, header: Header, scan_time: float = 0.0) -> LaserScan:
    """segmentation/scan: range_min the nearest ground in view, range_max = max_range."""
    return _scan(ranges, proj, header, scan_time, range_min=max(proj.range_min - 1e-3, 0.0),
                 range_max=proj.max_range)


def free_scan(ranges: np.ndarray, proj: GroundProjection, header: Header, scan_time: float = 0.0) -> LaserScan:
    """segmentation/free_scan: range_min the blind range (a costmap's raytrace_min_range for this camera)."""
    return _scan(ranges, proj, header, scan_time, range_min=max(proj.blind_range - 1e-3, 0.0),
                 range_max=proj.max_range + FREE_SCAN_RANGE_MARGIN)


def _scan(ranges, proj: GroundProjection, header: Header, scan_time: float, *, range_min: float,
          range_max: float) -> LaserScan:
    return LaserScan(header=header, angle_min=float(proj.scan_angle_min),
                     angle_max=float(proj.scan_angle_min + proj.scan_increment * (proj.scan_beams - 1)),
                     angle_increment=float(proj.scan_increment), time_increment=0.0, scan_time=float(scan_time),
                     range_min=float(range_min), range_max=float(range_max),
                     ranges=packed(ranges, "f"), intensities=array.array("f"))


def occupancy_grid(data: np.ndarray, grid: GridSpec, header: Header) -> OccupancyGrid:
    origin = Pose()
    origin.position.x, origin.position.y = float(grid.x_range[0]), float(grid.y_range[0])
    origin.orientation.w = 1.0
    info = MapMetaData(map_load_time=header.stamp, resolution=float(grid.resolution), width=grid.width,
                       height=grid.height, origin=origin)
    return OccupancyGrid(header=header, info=info, data=packed(data, "b"))
