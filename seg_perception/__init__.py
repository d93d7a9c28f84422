"""seg_perception: real-time semantic segmentation for ROS 2 driving stacks."""

__version__ = "0.1.0"
