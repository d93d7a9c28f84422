"""The thin rclpy layers: the segmentation node, the bag replayer and the message conversions."""
