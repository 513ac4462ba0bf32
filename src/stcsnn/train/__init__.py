"""Training, evaluation and checkpoints."""

from stcsnn.models.loading import load_model, read_checkpoint
from stcsnn.train.evaluate import evaluate, write_report
from stcsnn.train.loop import Trainer, train

__all__ = ["Trainer", "evaluate", "load_model", "read_checkpoint", "train", "write_report"]
