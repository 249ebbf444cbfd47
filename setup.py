"""ament_python package caer_ros (the repo root); caer_msgs is a separate ament_cmake package."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "caer_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    package_data={"training": ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="caer_ros developers",
    maintainer_email="caer-ros@example.org",
    description="Context-aware emotion recognition for robots (ROS 2)",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "emotion_node = caer_ros.ros.emotion_node:main",
            "caer-infer = caer_ros.inference.cli:main",
        ],
    },
)
