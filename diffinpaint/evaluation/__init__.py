"""Scoring: pixel metrics (metrics), LPIPS (lpips), Inception metrics (fid: FID, KID, P-IDS/U-IDS), the metric
columns and their pooling (columns), the training-set leakage check (leakage), the eval verb (evaluate), the
static report (report) and the Kaggle export (export). Importing this package imports nothing heavy;
`evaluation.report` and `evaluation.columns` never import torch."""
