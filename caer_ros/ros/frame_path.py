"""The frame path: one camera message in, one PersonEmotionArray (and overlay image) out.

It reads top to bottom as receive -> convert -> predict -> keep people in the image -> track
-> messages:

- :class:`LatestFrame` is the receive side: the subscription callback puts each message in a
  one-slot box (a newer message replaces one not yet taken: a dropped frame);
- :func:`process_frame` is the rest, run by the node's worker thread for each taken message;
  publishing its result is the node's job.

Nothing here imports rclpy; the predictor is any object with ``categories`` and
``predict(image_bgr, detection_threshold=..., max_people=...)`` returning detections with
``boxes``, ``detection_scores``, ``scores`` and ``continuous`` (see
:class:`caer_ros.inference.decode.Detections`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from caer_msgs.msg import PersonEmotion, PersonEmotionArray
from caer_ros.inference.decode import labels_over_threshold
from caer_ros.inference.overlay import draw_detections
from caer_ros.inference.tracking import IouTracker, TrackedPeople, track
from caer_ros.ros.image_conversion import bgr_to_image, to_bgr


@dataclass(frozen=True)
class FrameSettings:
    """What the frame path needs of the parameters, already resolved against the model."""

    detection_threshold: float
    emotion_thresholds: np.ndarray  # (E,), one per category of the predictor
    max_people: int
    single_label: bool = False  # the reported set has one category per person: the top label
    single_label_threshold: bool = False  # ... and only when it reaches its threshold


@dataclass(frozen=True)
class FrameOutput:
    """The messages for one frame; ``overlay`` is None when it was not asked for."""

    people: PersonEmotionArray
    overlay: Image | None


class LatestFrame:
    """A one-slot box holding the newest message and the time it arrived (thread-safe)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: tuple[Image | CompressedImage, float] | None = None

    def put(self, msg: Image | CompressedImage) -> bool:
        """Store ``msg``; True when it replaced a message nobody took (a dropped frame)."""
        with self._ready:
            replaced = self._item is not None
            self._item = (msg, time.monotonic())
            self._ready.notify()
        return replaced

    def take(self, timeout: float) -> tuple[Image | CompressedImage, float] | None:
        """The newest ``(message, arrival time.monotonic())``, waiting up to ``timeout`` s."""
        with self._ready:
            if self._item is None:
                self._ready.wait(timeout)
            item, self._item = self._item, None
        return item

    def clear(self) -> bool:
        """Forget a waiting message; True when there was one."""
        with self._ready:
            had, self._item = self._item is not None, None
        return had


def process_frame(msg: Image | CompressedImage, predictor: Any, settings: FrameSettings,
                  tracker: IouTracker | None = None, overlay: bool = False) -> FrameOutput:
    """convert -> predict -> track -> messages, for one message. Raises
    :class:`~caer_ros.ros.image_conversion.ImageConversionError` for a bad frame."""
    image = to_bgr(msg)
    detections = predictor.predict(image, detection_threshold=settings.detection_threshold,
                                   max_people=settings.max_people)
    people = track(tracker, detections)
    categories = tuple(predictor.categories)
    result = people_message(msg.header, categories, detections, people,
                            settings.emotion_thresholds, settings.single_label,
                            settings.single_label_threshold)
    drawn = None
    if overlay:
        drawn = bgr_to_image(draw_detections(image, detections, categories,
                                             settings.emotion_thresholds, ids=people.ids,
                                             scores=people.scores,
                                             single_label=settings.single_label,
                                             top_needs_threshold=settings.single_label_threshold),
                             msg.header)
    return FrameOutput(result, drawn)


def people_message(header: Any, categories: tuple[str, ...], detections: Any,
                   people: TrackedPeople, thresholds: np.ndarray, single_label: bool = False,
                   top_needs_threshold: bool = False) -> PersonEmotionArray:
    """The PersonEmotionArray of one frame (header copied, people in detection order; for a
    ``single_label`` set each person's labels are the top category alone)."""
    msg = PersonEmotionArray()
    msg.header = header
    msg.categories = list(categories)
    scores = np.asarray(people.scores, dtype=np.float32)
    scores = scores.reshape(len(people.ids), len(categories))
    labels = labels_over_threshold(scores, categories, thresholds, single_label,
                                   top_needs_threshold)
    for n, person_id in enumerate(people.ids):
        x_min, y_min, x_max, y_max = (float(v) for v in detections.boxes[n])
        valence = arousal = dominance = math.nan
        if people.continuous is not None:
            valence, arousal, dominance = (float(v) for v in people.continuous[n][:3])
        msg.people.append(PersonEmotion(
            id=person_id, detection_score=float(detections.detection_scores[n]),
            x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max,
            scores=scores[n].tolist(), labels=labels[n],
            valence=valence, arousal=arousal, dominance=dominance,
        ))
    return msg
