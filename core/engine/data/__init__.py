"""Data folders: what a folder of cell images holds and which images a job reads from it.

- `layouts`: the two layouts understood (lab CSVs `train.csv`/`valid.csv`/test CSV; the C-NMC tree of
  `*_all.bmp`/`*_hem.bmp`), `Sample`, `read_split`, every bad row one line naming the file and row.
- `release`: the C-NMC 2019 release as downloaded (training folds, prelim with labels, final).
- `splits`: named splits, the one resolver from a split name (`train`, `fold:2`, `kfold:5:0`,
  `share:0.2`, ...) to samples for every layout; subject-grouped folds.
- `check`: `leukemia check`, every problem of a folder at once.
- `patient_split`: the patient-safe C-NMC → lab CSV split (no patient on both sides).
- `data_roots`: symlinks leading outside DATA_ROOTS, and the one test of containment.
- `synth`: a synthetic lab-layout folder of C-NMC-like cells, for tests and demos.

Nothing here writes into a data folder (which may be read-only), except `patient_split` and `synth`,
which are asked to."""
