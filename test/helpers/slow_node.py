"""``emotion_node`` whose model load first sleeps: a stand-in for a TensorRT engine build
(minutes on a Jetson), which a machine without a GPU cannot do.

    python test/helpers/slow_node.py SECONDS --ros-args ...

Everything else is the real node (:func:`caer_ros.ros.emotion_node.main`) and the real load.
"""

from __future__ import annotations

import sys
import time

from caer_ros.ros.emotion_node import load_predictor, main


def slow_load(seconds: float):
    def load(params):
        time.sleep(seconds)
        return load_predictor(params)
    return load


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], predictor_factory=slow_load(float(sys.argv[1]))))
