# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""ament_python package: `colcon build` installs the node under lib/seg_perception and the
launch, config and model files under share/seg_perception.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "seg_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["models/*.pt", "models/*.onnx"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        (f"share/{PACKAGE}/config/mappings", sorted(glob("config/mappings/*.yaml"))),
        (f"share/{PACKAGE}/config/cameras", sorted(glob("config/cameras/*.yaml"))),
        (f"share/{PACKAGE}/config/families", sorted(glob("config/families/*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="seg_perception maintainers",
    maintainer_email="maintainers@seg-perception.dev",
    description="Real-time semantic segmentation for ROS 2 driving stacks",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "segmentation_node = seg_perception.ros.node:main",
            "segmentation_lifecycle_node = seg_perception.ros.lifecycle_node:main",
            "free_space_monitor = seg_perception.ros.free_space_monitor:main",
            "seg-perception = seg_perception.cli.main:main",
        ],
    },
)
