"""The command line ``launch/emotion.launch.py`` runs, for machines without ROS ``launch``.

``ros2 launch caer_ros emotion.launch.py image_topic:=T params_file:=P model_path:=M
autostart:=A use_sim_time:=S namespace:=NS node_name:=N`` starts the console script
``emotion_node`` as::

    emotion_node --ros-args -r __node:=N [-r __ns:=/NS] --params-file P' [-p model_path:=M]
        [-p autostart:=A] -p use_sim_time:=S -r image:=T -r image/compressed:=T/compressed

where P' is P, or for a renamed node a copy whose ``emotion_node`` section is named after it
(:func:`params_for_node`): a params file names the node it is for. The shipped file's section
is ``/**/emotion_node``: any namespace, the default name. (A bare ``/**`` section would reach
every node, but rcl then silently drops a ``-p`` override whose type differs from the
file's.)

rclpy reads those arguments itself, so :func:`emotion_node_command` gives the same node without
``launch``/``launch_ros`` (not on PyPI): ``make demo``, the tests and the benchmarks start the
node this way. Nothing here imports rclpy.
"""

from __future__ import annotations

import hashlib
import os
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
    """The params file a node named ``node_name`` in ``namespace`` reads. The shipped file's
    section ``/**/emotion_node`` reaches a node of the default name in any namespace (also one
    pushed by an including launch file), so that file is given as it is. Otherwise a copy
    whose default section (``emotion_node``, ``/emotion_node`` or ``/**/emotion_node``), with
    the node's own section over it (``/NS/N``, ``/**/N``), is named ``/**/N``: written once per
    content in the temp folder (``caer_ros_params/``). A file that is not such YAML is given
    as it is (rcl says what is wrong with it)."""
    path = Path(params_file)
    name = full_name(namespace, node_name)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return path
    if not isinstance(data, dict):
        return path
    defaults = [key for key in data if key in (NODE_NAME, f"/{NODE_NAME}", f"/**/{NODE_NAME}")]
    own = [key for key in data if key in (name, name.lstrip("/"), f"/**/{node_name}")
           and key not in defaults]
    if not defaults or (node_name == NODE_NAME and not own and
                        (defaults == [f"/**/{NODE_NAME}"] or name == f"/{NODE_NAME}")):
        return path
    values: dict = {}
    for key in [*defaults, *own]:
        section = data.pop(key) or {}
        values.update((section.get("ros__parameters") or {}) if isinstance(section, dict)
                      else {})
    data[f"/**/{node_name}"] = {"ros__parameters": values}
    text = yaml.safe_dump(data, sort_keys=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "caer_ros_params"
    written = folder / f"{node_name}-{digest}.yaml"
    if not written.is_file():  # the same content is written once
        folder.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=folder, suffix=".partial")
        with open(handle, "w") as out:
            out.write(text)
        os.replace(partial, written)
    return written


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
