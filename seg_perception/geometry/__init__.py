"""Monocular ground-plane geometry, ROS-free: camera model, camera pose, projection tables, free space."""
