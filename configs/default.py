"""Base config: every field the trainer reads, at its default. Experiment configs override a few.

The fields, their defaults, meanings and allowed values are one table, trainer/config_fields.py
(`python -m trainer.main --help` prints it). Usage:
`python -m trainer.main --config=configs/<experiment>.py --data_dir=D --model_dir=M`; any field
can also be set as `--config.<field>=<value>` (e.g. `--config.fine_tune.epochs=5`), the most
used also as a short flag (`--epochs=5`).
Training runs in up to two phases: "train" (epochs, optimizer, learning_rate; with
model.freeze_base the pretrained base stays frozen) and "fine_tune" (fine_tune.*, skipped
when fine_tune.epochs is 0), which unfreezes the base from fine_tune.unfreeze_from on.
"""

import ml_collections

from trainer import config_fields


def get_config() -> ml_collections.ConfigDict:
    return config_fields.default_config()
