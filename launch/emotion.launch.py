"""Start caer_ros's emotion_node on a camera topic.

    ros2 launch caer_ros emotion.launch.py image_topic:=/my_camera/image_raw \
        model_path:=/path/to/emotion.onnx

Arguments: ``image_topic`` (camera topic; with image_transport compressed the node reads
``<image_topic>/compressed``), ``params_file`` (default: the installed config/emotion.yaml,
whose values equal the node's defaults), ``model_path`` (overrides the params file's when
non-empty), ``autostart`` (true or false, overrides the params file's when non-empty;
false: the node waits unconfigured for ``ros2 lifecycle set /emotion_node configure`` or a
lifecycle manager), ``use_sim_time`` (true: the node's clock follows ``/clock``, as when
replaying a rosbag with ``ros2 bag play --clock``; default false), ``namespace`` (default
empty: the outputs are ``/people_emotions``...; ``head``: ``/head/people_emotions``...) and
``node_name`` (default emotion_node). One launch per camera, each with its own namespace::

    ros2 launch caer_ros emotion.launch.py namespace:=head image_topic:=/head_camera/image_raw
    ros2 launch caer_ros emotion.launch.py namespace:=base image_topic:=/base_camera/image_raw
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from caer_ros.ros.launch_command import params_for_node


def _emotion_node(context):
    image_topic = LaunchConfiguration("image_topic").perform(context)
    model_path = LaunchConfiguration("model_path").perform(context)
    autostart = LaunchConfiguration("autostart").perform(context).strip().lower()
    if autostart not in ("", "true", "false"):
        raise ValueError(f"autostart: must be true or false, got {autostart!r}")
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).strip().lower()
    if use_sim_time not in ("true", "false"):
        raise ValueError(f"use_sim_time: must be true or false, got {use_sim_time!r}")
    node_name = LaunchConfiguration("node_name").perform(context).strip()
    if not node_name:
        raise ValueError("node_name: must not be empty")
    namespace = LaunchConfiguration("namespace").perform(context).strip()
    # The params file's emotion_node section, given to this node's own name.
    parameters = [str(params_for_node(LaunchConfiguration("params_file").perform(context),
                                      namespace, node_name))]
    if model_path:
        parameters.append({"model_path": model_path})
    if autostart:
        parameters.append({"autostart": autostart == "true"})
    parameters.append({"use_sim_time": use_sim_time == "true"})
    return [
        Node(
            package="caer_ros",
            executable="emotion_node",
            name=node_name,
            namespace=namespace,
            parameters=parameters,
            remappings=[
                ("image", image_topic),
                ("image/compressed", image_topic + "/compressed"),
            ],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory("caer_ros"), "config", "emotion.yaml"
    )
    return LaunchDescription([
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw",
            description="Camera image topic (sensor_msgs/Image).",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=default_params,
            description="Node parameters (ros__parameters YAML).",
        ),
        DeclareLaunchArgument(
            "model_path", default_value="",
            description="Model file; overrides the params file's model_path when not empty.",
        ),
        DeclareLaunchArgument(
            "autostart", default_value="",
            description="true: configure and activate at start; false: wait unconfigured for a "
                        "lifecycle manager; empty: the params file's autostart (true).",
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false",
            description="true: the node's clock follows /clock (rosbag replay with --clock).",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="The node's namespace (one per camera, e.g. head): its outputs are "
                        "<namespace>/people_emotions and <namespace>/people_emotions/overlay.",
        ),
        DeclareLaunchArgument(
            "node_name", default_value="emotion_node",
            description="The node's name.",
        ),
        OpaqueFunction(function=_emotion_node),
    ])
