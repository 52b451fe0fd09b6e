"""Scoring: metrics, FID/KID features, the eval verb and the static report. Importing this package imports
nothing heavy; `evaluation.report` never imports torch."""
