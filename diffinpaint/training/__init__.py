"""The one trainer (trainer.py) and what it owns: training data, checkpoints, setup; the engine above the models."""
