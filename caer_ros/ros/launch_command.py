"""The command line ``launch/emotion.launch.py`` runs, for machines without ROS ``launch``.

``ros2 launch caer_ros emotion.launch.py image_topic:=T params_file:=P model_path:=M
autostart:=A use_sim_time:=S namespace:=NS node_name:=N`` starts the console script
``emotion_node`` as::

    emotion_node --ros-args -r __node:=N [-r __ns:=/NS] --params-file P' [-p model_path:=M]
        [-p autostart:=A] -p use_sim_time:=S -r image:=T -r image/compressed:=T/compressed

where P' is P with its ``emotion_node`` section given to the node's full name ``/NS/N``
(:func:`params_for_node`): a params file names the node it is for, so a node renamed or put
in a namespace would read none of it. (A ``/**`` section would reach every node, but rcl then
silently drops a ``-p`` override whose type differs from the file's.)

rclpy reads those arguments itself, so :func:`emotion_node_command` gives the same node without
``launch``/``launch_ros`` (not on PyPI): ``make demo``, the tests and the benchmarks start the
node this way. Nothing here imports rclpy.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

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


def full_name(namespace: str = "", node_name: str = NODE_NAME) -> str:
    """``/head/emotion_node`` for namespace ``head`` (leading and trailing slashes as given or
    not), ``/emotion_node`` without one."""
    namespace = namespace.strip("/")
    return f"/{namespace}/{node_name}" if namespace else f"/{node_name}"


def params_for_node(params_file: str | Path, namespace: str = "",
                    node_name: str = NODE_NAME) -> Path:
    """The params file a node named ``node_name`` in ``namespace`` reads: ``params_file``
    itself for ``/emotion_node``; else a copy (in the temp folder) whose ``emotion_node``
    section is named after the node, under that node's own section when the file has one.
    A file that is not such YAML is given as it is (rcl says what is wrong with it)."""
    path = Path(params_file)
    name = full_name(namespace, node_name)
    if name == f"/{NODE_NAME}":
        return path
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return path
    if not isinstance(data, dict):
        return path
    defaults = [key for key in data if isinstance(key, str) and key.strip("/") == NODE_NAME]
    if not defaults:
        return path
    values: dict = {}
    for key in [*defaults, *(k for k in (name, name.lstrip("/")) if k in data)]:
        section = data.pop(key) or {}
        values.update((section.get("ros__parameters") or {}) if isinstance(section, dict)
                      else {})
    data[name] = {"ros__parameters": values}
    handle, written = tempfile.mkstemp(prefix=f"caer_ros_{node_name}_", suffix=".yaml")
    with open(handle, "w") as out:
        yaml.safe_dump(data, out, sort_keys=False)
    return Path(written)


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
                         use_sim_time: bool = False, namespace: str = "",
                         node_name: str = NODE_NAME) -> list[str]:
    """The launch file's command (module docstring); ``ros_args`` go after it (``-p x:=y``).
    ``model_path`` and ``autostart`` left out (None): the params file's; ``use_sim_time`` is
    always set, as the launch argument (default false); ``namespace`` "": none (a name
    without a leading slash is made absolute, as launch_ros does)."""
    params = Path(params_file) if params_file is not None else default_params_file()
    command = [*node_executable(), "--ros-args", "-r", f"__node:={node_name}"]
    if namespace.strip("/"):
        command += ["-r", f"__ns:=/{namespace.strip('/')}"]
    command += ["--params-file", str(params_for_node(params, namespace, node_name))]
    if model_path:
        command += ["-p", f"model_path:={model_path}"]
    if autostart is not None:
        command += ["-p", f"autostart:={str(bool(autostart)).lower()}"]
    command += ["-p", f"use_sim_time:={str(bool(use_sim_time)).lower()}"]
    command += ["-r", f"image:={image_topic}", "-r", f"image/compressed:={image_topic}/compressed"]
    return [*command, *ros_args]
