"""QoS of the image subscription, and why no image arrives (a warning naming the fix).

The most common "node publishes nothing" cause with cameras is a QoS mismatch: a reliable
subscription never hears a best-effort publisher. :func:`input_problem` looks at the
publishers of the input topic (``Node.get_publishers_info_by_topic``) and names the problem
and the parameter to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}


def image_qos(reliability: str) -> QoSProfile:
    """Keep the newest frame only (depth 1), volatile, reliability as given."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=RELIABILITY[reliability], durability=DurabilityPolicy.VOLATILE)


def reliability_name(policy: Any) -> str:
    """``best_effort`` / ``reliable`` / the policy's own name in lower case."""
    for name, value in RELIABILITY.items():
        if policy == value:
            return name
    return getattr(policy, "name", str(policy)).lower()


def input_problem(topic: str, expected_type: str, reliability: str,
                  publishers: Sequence[Any]) -> str | None:
    """Why a subscription to ``topic`` hears nothing, or None when the publishers look fine.

    ``publishers``: TopicEndpointInfo of the topic's publishers; ``reliability``: ours.
    """
    if not publishers:
        return (f"no publisher on {topic}: remap the node's input to the camera topic "
                f"(image:=<topic>, launch argument image_topic)")
    wrong_type = sorted({p.topic_type for p in publishers if p.topic_type != expected_type})
    if wrong_type:
        transport = "compressed" if "Compressed" in wrong_type[0] else "raw"
        return (f"{topic} carries {', '.join(wrong_type)}, but the node expects "
                f"{expected_type}: set image_transport:={transport} or remap to another topic")
    if reliability == "reliable":
        best_effort = [_node(p) for p in publishers
                       if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if best_effort:
            return (f"no image on {topic}: its publisher(s) {', '.join(best_effort)} offer "
                    f"reliability best_effort, but this node subscribes with reliable; set "
                    f"qos_reliability:=best_effort")
    return None


def incompatible_qos_hint(topic: str, policy: str, reliability: str) -> str:
    """Warning for a publisher whose QoS does not match ours (``policy``: its kind's name,
    e.g. ``RELIABILITY`` or ``RMW_QOS_POLICY_RELIABILITY``)."""
    policy = policy.upper().removeprefix("RMW_QOS_POLICY_")
    text = f"a publisher on {topic} offers QoS incompatible with this node's (policy {policy})"
    if policy == "RELIABILITY" and reliability == "reliable":
        text += "; it publishes best_effort: set qos_reliability:=best_effort"
    return text + "; no images arrive from it"


def _node(info: Any) -> str:
    namespace = info.node_namespace.rstrip("/")
    return f"{namespace}/{info.node_name}" if info.node_name else "(unnamed)"
