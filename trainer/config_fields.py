"""The trainer's config fields in one table: name, default, help, allowed values, and whether a short flag sets it.

configs/default.py is the table's defaults; experiment configs (configs/*.py) override a few. Any field can be set
as `--config.<field>=<value>`, the fields marked `flag` also as `--<field>=<value>` (trainer/main.py defines those
flags from the table). `validate` checks a resolved config once, before any setup; the rest of the trainer takes
its values as valid.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import keras
import ml_collections

from trainer import distribution, input_pipeline, models
from trainer.errors import ConfigError

MODES = ("train", "eval", "train_and_eval")
BEST_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
BEST_MODES = ("max", "min")
TRANSFER_MODEL = "vgg16_transfer"  # The one model with a pretrained base (weights, freeze_base, fine_tune).


@dataclasses.dataclass(frozen=True)
class Rule:
    """A condition on a field's value, and how the help and the error state it."""

    holds: Callable[[Any], bool]
    text: str


def _keras_optimizer(name: str) -> bool:
    """Whether keras.optimizers.get resolves `name` (any case) to an optimizer built from a learning rate alone.

    Checked on the classes, without building one: an optimizer creates TensorFlow variables, which would initialize
    the devices before --num_cpu_devices can split the CPU.
    """
    base = keras.optimizers.Optimizer
    return name.lower() in {
        class_name.lower()
        for class_name, cls in vars(keras.optimizers).items()
        if inspect.isclass(cls)
        and issubclass(cls, base)
        and cls is not base
        and all(
            p.default is not p.empty
            for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
    }


POSITIVE = Rule(lambda value: value > 0, "> 0")
NOT_NEGATIVE = Rule(lambda value: value >= 0, ">= 0")
IMAGE_SIZE = Rule(
    lambda value: len(value) == 2 and all(isinstance(n, int) and n > 0 for n in value),
    "two positive integers (height, width)",
)
NOT_EMPTY = Rule(bool, "non-empty")
SEED = Rule(lambda value: 0 <= value < 2**32, "in [0, 2**32)")  # numpy's range (keras.utils.set_random_seed).
OPTIMIZER = Rule(_keras_optimizer, "a keras.optimizers name (adam, rmsprop, sgd, adamw, ...)")


@dataclasses.dataclass(frozen=True)
class Field:
    name: str  # Path in the config: "epochs", "fine_tune.epochs".
    default: Any
    help: str
    choices: tuple[Any, ...] = ()  # The allowed values; empty: any value of the default's type that `rule` allows.
    rule: Rule | None = None
    flag: bool = False  # Also a short flag --<name> (trainer/main.py).
    required: bool = False  # Must be set (non-empty) by the time the config is validated.

    def spelling(self) -> str:
        """How error messages name the field: as the user most likely set it."""
        return f"--{self.name}" if self.flag else f"config.{self.name}"

    def describe(self) -> str:
        """The help text with the allowed values."""
        if self.choices:
            return f"{self.help} One of: {', '.join(repr(c) for c in self.choices)}."
        return f"{self.help} Must be {self.rule.text}." if self.rule else self.help

    def check(self, value: Any) -> None:
        if self.required and not value:
            raise ConfigError(f"{self.spelling()} is required: {self.help}")
        if not _has_type_of(value, self.default):
            raise ConfigError(
                f"{self.spelling()}={value!r}: must be of type {type(self.default).__name__}, like "
                f"the default {self.default!r}."
            )
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.spelling()}={value!r}: choose one of {self.choices}.")
        if self.rule and not self.rule.holds(value):
            raise ConfigError(f"{self.spelling()}={value!r}: must be {self.rule.text}.")


def _has_type_of(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


FIELDS = (
    # Where.
    Field(
        "data_dir",
        "",
        "Dataset directory written by `python -m data_prep.build` (local or gs://), or for vgg16_head by "
        "`python -m data_prep.extract_features`.",
        flag=True,
        required=True,
    ),
    Field(
        "model_dir",
        "",
        "Output directory (local or gs://): checkpoints, config.json, metrics.jsonl, eval/, export/.",
        flag=True,
        required=True,
    ),
    # How to run.
    Field("strategy", "mirrored", "Distribution strategy.", choices=distribution.STRATEGIES, flag=True),
    Field("tpu", "", "TPU name or grpc:// address; 'local' on a TPU VM.", flag=True),
    Field(
        "num_cpu_devices",
        0,
        "> 1 splits the CPU into this many logical devices (mirrored without GPUs).",
        rule=NOT_NEGATIVE,
        flag=True,
    ),
    Field(
        "mixed_precision",
        "auto",
        "auto: mixed_bfloat16 on TPU and on CPUs with AMX bfloat16 units (oneDNN on), mixed_float16 on GPUs of "
        "compute capability >= 7, float32 otherwise.",
        choices=distribution.PRECISIONS,
        flag=True,
    ),
    Field(
        "mode",
        "train_and_eval",
        "eval reports the best (else latest) checkpoint on test_split.",
        choices=MODES,
        flag=True,
    ),
    Field(
        "eval_checkpoint",
        "",
        "--mode=eval: a checkpoint path; '' = model_dir's best model, else its latest checkpoint.",
    ),
    Field("seed", 0, "Seed of initialization, shuffling and augmentation.", rule=SEED, flag=True),
    Field(
        "jit_compile",
        False,
        "XLA-compiles each replica's forward and backward pass (the update stays outside: "
        "XLA cannot hold the cross-replica sum). Not with synchronized BatchNorm on several replicas.",
    ),
    Field("steps_per_loop", 100, "Training steps per tf.function call (capped by the epoch length).", rule=POSITIVE),
    Field(
        "progress_every_s",
        30.0,
        "Seconds between progress lines within an epoch when stderr is neither a terminal nor a notebook (there: "
        "a bar, moved after every steps_per_loop steps); chief only; 0: neither.",
        rule=NOT_NEGATIVE,
    ),
    # Data (trainer/input_pipeline.py).
    Field("image_size", (224, 224), "(height, width) the images are resized to.", rule=IMAGE_SIZE),
    Field(
        "normalization",
        "unit",
        "vgg16: Keras's VGG16 preprocessing (grey becomes RGB); dataset: the train "
        "split's per-channel mean/std from metadata.json; unit: 1/255.",
        choices=input_pipeline.NORMALIZATIONS,
    ),
    Field("train_split", "train", "Split trained on."),
    Field("eval_split", "validation", "Split evaluated after every epoch."),
    Field(
        "test_split", "test", "Split --mode=eval reports on: model_dir/eval/<split>.json and a confusion-matrix PNG."
    ),
    Field(
        "cache",
        "auto",
        "Decoded images: 'auto' (in memory if a pipeline's share fits "
        f"{input_pipeline.MEMORY_CACHE_BUDGET_BYTES >> 30} GiB), 'memory', 'none', or a directory for a file cache.",
        rule=NOT_EMPTY,
    ),
    # Model (trainer/models.py).
    Field("model.name", "mnist_cnn", "The model.", choices=models.MODEL_NAMES),
    Field("model.weights", "", f"{TRANSFER_MODEL}: 'imagenet', a local .h5/.weights.h5 path, or '' (random)."),
    Field("model.freeze_base", False, f"{TRANSFER_MODEL}: train only the head in the 'train' phase."),
    Field(
        "init_head_from",
        "",
        f"{TRANSFER_MODEL}: a fresh run starts its head from the best (else latest) checkpoint of this model_dir of a "
        f"{models.HEAD_MODEL} run, trained on features of the same base, images and classes (checked); then "
        "--epochs=0 fine-tunes at once. A resumed run restores its own checkpoint instead.",
    ),
    # Phase "train".
    Field("global_batch_size", 32, "Batch size summed over all replicas.", rule=POSITIVE, flag=True),
    Field("epochs", 10, "Epochs of the 'train' phase.", rule=NOT_NEGATIVE, flag=True),
    Field("optimizer", "adam", "Optimizer of the 'train' phase.", rule=OPTIMIZER),
    Field("learning_rate", 1e-3, "Learning rate of the 'train' phase.", rule=NOT_NEGATIVE, flag=True),
    # Phase "fine_tune" (the transfer model only; skipped when fine_tune.epochs is 0).
    Field("fine_tune.epochs", 0, f"Epochs of the 'fine_tune' phase ({TRANSFER_MODEL} only).", rule=NOT_NEGATIVE),
    Field("fine_tune.optimizer", "rmsprop", "Optimizer of the 'fine_tune' phase.", rule=OPTIMIZER),
    Field("fine_tune.learning_rate", 1e-5, "Learning rate of the 'fine_tune' phase.", rule=NOT_NEGATIVE),
    Field(
        "fine_tune.unfreeze_from",
        "block5_conv1",
        "The 'fine_tune' phase trains the pretrained base from this layer on.",
    ),
    # Checkpoints (model_dir/checkpoints; trainer/checkpointing.py). Rerunning the same command resumes.
    Field(
        "checkpoint_every_steps",
        500,
        "A checkpoint every N steps (0: at epoch ends only); also at each epoch end and on SIGTERM.",
        rule=NOT_NEGATIVE,
    ),
    Field("checkpoints_to_keep", 3, "Newest checkpoints kept.", rule=POSITIVE),
    # Best model (model_dir/best).
    Field(
        "best_metric",
        "val_accuracy",
        "The epoch-end model with the best value of this metric is kept in "
        "model_dir/best, evaluated and exported ('' turns tracking off).",
        choices=("", *BEST_METRICS),
    ),
    Field("best_mode", "max", "Whether the best best_metric is the largest or the smallest.", choices=BEST_MODES),
    Field(
        "early_stopping_patience",
        0,
        "Ends a phase after this many epochs without a new best (and at least as many in the phase); 0: off.",
        rule=NOT_NEGATIVE,
    ),
)
BY_NAME = {field.name: field for field in FIELDS}
FLAG_FIELDS = tuple(field for field in FIELDS if field.flag)


def default_config() -> ml_collections.ConfigDict:
    """Every field at its default (configs/default.py)."""
    nested: dict[str, Any] = {}
    for field in FIELDS:
        *parents, leaf = field.name.split(".")
        group = nested
        for parent in parents:
            group = group.setdefault(parent, {})
        group[leaf] = field.default
    return ml_collections.ConfigDict(nested)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for an unknown or missing field, a value a field does not allow, or a combination of
    fields that cannot run. trainer.main calls it once per run, on the config with every override applied."""
    names = set(_leaf_names(config))
    if unknown := sorted(names - BY_NAME.keys()):
        raise ConfigError(
            f"unknown config field {', '.join(unknown)}: the fields are those of trainer/config_fields.py."
        )
    if missing := sorted(BY_NAME.keys() - names):
        raise ConfigError(
            f"the config lacks field {', '.join(missing)}: start it from configs/default.py's get_config()."
        )
    for field in FIELDS:
        field.check(_get(config, field.name))
    _check_transfer_fields(config)
    _check_early_stopping(config)


def _leaf_names(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaf_names(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _get(config: ml_collections.ConfigDict, name: str) -> Any:
    for key in name.split("."):
        config = config[key]
    return config


def _check_transfer_fields(config: ml_collections.ConfigDict) -> None:
    scratch_weights = config.model.weights not in ("", "none")
    if config.model.name != TRANSFER_MODEL and (
        config.model.freeze_base or config.fine_tune.epochs or scratch_weights or config.init_head_from
    ):
        raise ConfigError(
            f"model {config.model.name} has no pretrained base: model.weights, model.freeze_base, init_head_from "
            f"and fine_tune.epochs apply to {TRANSFER_MODEL} only."
        )


def _check_early_stopping(config: ml_collections.ConfigDict) -> None:
    if config.early_stopping_patience and (
        not config.best_metric or config.mode == "train" and config.best_metric.startswith("val_")
    ):
        raise ConfigError(
            f"early_stopping_patience watches best_metric={config.best_metric!r}, which this run "
            "does not compute: set a best_metric, and use --mode=train_and_eval for a val_ metric."
        )
