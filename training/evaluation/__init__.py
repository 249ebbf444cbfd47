"""How a model is scored: the papers' metrics (:mod:`.metrics`: ER mAP, person-detection AP,
OER, macro F1, CCC), the evaluator over a test split through the node's code path
(:mod:`.evaluate`, CLI ``python -m training.evaluate``), a student's agreement with its
teacher on unlabelled frames (:mod:`.agreement`, ``python -m training.evaluate --against``),
per-category thresholds (:mod:`.calibrate`) and the per-task validation metrics of a training
run (:mod:`.task_metrics`)."""
