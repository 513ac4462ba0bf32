"""Training, evaluation and checkpoints."""

from stcsnn.models.loading import load_model, read_checkpoint
from stcsnn.train.evaluate import evaluate_model, write_report
from stcsnn.train.loop import Trainer, train

__all__ = ["Trainer", "evaluate_model", "load_model", "read_checkpoint", "train", "write_report"]
