"""The command line ``launch/emotion.launch.py`` runs, for machines without ROS ``launch``.

``ros2 launch caer_ros emotion.launch.py image_topic:=T params_file:=P model_path:=M
autostart:=A use_sim_time:=S`` starts the console script ``emotion_node`` as::

    emotion_node --ros-args -r __node:=emotion_node --params-file P [-p model_path:=M]
        [-p autostart:=A] -p use_sim_time:=S -r image:=T -r image/compressed:=T/compressed

rclpy reads those arguments itself, so :func:`emotion_node_command` gives the same node without
``launch``/``launch_ros`` (not on PyPI): ``make demo``, the tests and the benchmarks start the
node this way. Nothing here imports rclpy.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

NODE_NAME = "emotion_node"
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"  # the launch file's image_topic default
_SOURCE_TREE_PARAMS = Path(__file__).resolve().parents[2] / "config" / "emotion.yaml"


def default_params_file() -> Path:
    """config/emotion.yaml: the source tree's (editable install) or the installed share
    folder's (colcon)."""
    if _SOURCE_TREE_PARAMS.is_file():
        return _SOURCE_TREE_PARAMS
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("caer_ros")) / "config" / "emotion.yaml"


def node_executable() -> list[str]:
    """The ``emotion_node`` console script beside this Python (``python -m`` where it is
    not installed)."""
    script = Path(sys.executable).with_name(NODE_NAME)
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "caer_ros.ros.emotion_node"]


def emotion_node_command(image_topic: str = DEFAULT_IMAGE_TOPIC,
                         params_file: str | Path | None = None,
                         model_path: str | Path | None = None,
                         ros_args: Sequence[str] = (),
                         autostart: bool | None = None,
                         use_sim_time: bool = False) -> list[str]:
    """The launch file's command (module docstring); ``ros_args`` go after it (``-p x:=y``).
    ``model_path`` and ``autostart`` left out (None): the params file's; ``use_sim_time`` is
    always set, as the launch argument (default false)."""
    params = Path(params_file) if params_file is not None else default_params_file()
    command = [*node_executable(), "--ros-args", "-r", f"__node:={NODE_NAME}",
               "--params-file", str(params)]
    if model_path:
        command += ["-p", f"model_path:={model_path}"]
    if autostart is not None:
        command += ["-p", f"autostart:={str(bool(autostart)).lower()}"]
    command += ["-p", f"use_sim_time:={str(bool(use_sim_time)).lower()}"]
    command += ["-r", f"image:={image_topic}", "-r", f"image/compressed:={image_topic}/compressed"]
    return [*command, *ros_args]
