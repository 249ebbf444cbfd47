"""How a model is scored: the papers' metrics (:mod:`.metrics`: ER mAP, person-detection AP,
OER, macro F1, CCC), the evaluator over a test split through the node's code path
(:mod:`.evaluate`, CLI ``python -m training.evaluate``), per-category thresholds
(:mod:`.calibrate`) and the per-task validation metrics of a training run
(:mod:`.task_metrics`)."""
