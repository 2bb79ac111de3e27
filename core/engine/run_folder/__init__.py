"""The run folder: where one run (a training, an evaluation, a prediction, a fold) keeps its files, and
the artifact store that keeps them once written.

- `layout`: what a run folder holds, every file name once (checkpoints, `.run_key`, metrics.json,
  evaluation.json, ...) with the artifact kind it is recorded as; `classify_artifacts`.
- `resolver`: the one answer to "which checkpoint" (a .pt file, or a run folder's best.pt / last.pt)
  and `claim_run_folder`, the proof that a job's run folder is that job's (its `.run_key` stamp).
- `history_files`: metrics.json and metrics.csv, the epoch history, rewritten after each epoch.
- `event_log`: the same epochs as a TensorBoard event log.
- `spreadsheet_csv`: the one writer and reader of the CSVs meant for people (formula cells defused).
- `artifact_store/`: where run folders live once written (ARTIFACTS_URL: a folder, or an S3 bucket);
  callers name keys (`jobs/<id>-<run_key>/best.pt`), never paths into the store.

Which run folder a queued job has on this node is the service's question (core.service.run_folders,
which asks the settings). Nothing here imports torch, so the web reads run folders through it."""
