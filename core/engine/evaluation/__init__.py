"""Evaluation and prediction: scoring a checkpoint (or an ensemble) on a labelled CSV, predicting a
test CSV, and everything written about it.

- `predict`: `evaluate_csv` and `predict_csv` (test-time augmentation, checkpoint ensembles), the
  submission CSV, evaluation.json and the per-subject table.
- `scores`: the classifier's scores: accuracy, balanced accuracy, weighted F1 (the challenge's
  metric), the confusion matrix, the per-subject table. ("metrics" in this codebase is telemetry:
  core/service/metrics.py, worker/metrics.py, web/metrics.py.)
- `clinical`: ROC and PR curves, sensitivity/specificity/PPV/NPV at a threshold with bootstrap 95%
  intervals, calibration, threshold selection (numpy only).
- `threshold`: the operating threshold: given, chosen on the valid split, recorded in a checkpoint.
- `outputs`: what evaluate and predict write besides the headline scores (per_image.csv, the clinical
  plots, the histogram, prediction.json's summary).
- `explain`: Grad-CAM of the ALL logit at `layer4`, which images to explain, the overlays and zip.
- `plots`: matplotlib PNGs (training curves, confusion matrix, ROC, PR, calibration, histogram).
- `results`: the result models (pydantic) that evaluation.json, prediction.json and the API share.

`plots` (matplotlib) and `explain` (Grad-CAM) are imported where they are used, not at the top of
`predict` or of training, so running a model loads neither until it draws or explains."""
