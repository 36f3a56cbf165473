r"""usage: python -m trainer.main --config=configs/NAME.py --data_dir=DIR --model_dir=DIR [--epochs=N] [flags]
Trains and evaluates an image classifier on a dataset built by data_prep (installed as imgcls-train too).

  python -m trainer.main --config=configs/catsdogs_vgg16.py --data_dir=DATA --model_dir=RUN \
      [--strategy=mirrored] [--mixed_precision=auto] [--epochs=N] [--config.fine_tune.epochs=M]

Any config field can be set as `--config.<field>=<value>`; the most used also as a short flag
(`--epochs=N`, defined from trainer/config_fields.py). A short flag and `--config.` of the same
field given with different values is an error. The resolved config is validated once and
written to MODEL_DIR/config.json. In Python: `trainer.train_model(CONFIG, data_dir=..., epochs=...)`,
`trainer.evaluate_model(...)` (trainer/api.py), which this command calls.

Rerunning the same command continues from MODEL_DIR's latest checkpoint. Exit codes:
0 done; 1 bad input (errors.UserError and the others of USER_ERRORS), or a NaN/Inf loss (one
line naming the step; the last good checkpoint is kept); 42 (preemption.EXIT_CODE) stopped by
SIGTERM after saving: restart it. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import ast
import glob
import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from data_prep import logs
from trainer import api, config_fields, distribution, errors, models, preemption, train

# Errors that mean bad input or environment: reported in one line, without a traceback.
USER_ERRORS = (
    errors.UserError,
    FileNotFoundError,
    distribution.StrategyError,
    models.MissingWeightsError,
    train.NonFiniteLossError,
)
_DEFINE_BY_TYPE: dict[type, Callable[..., Any]] = {
    bool: flags.DEFINE_boolean,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """--config, and a short flag for each field of config_fields.FLAG_FIELDS (None when not given)."""
    fields = "\n".join(f"{field.name}={field.default!r}: {field.describe()}" for field in config_fields.FIELDS)
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config file, e.g. configs/catsdogs_vgg16.py. Any of its fields can be set as "
        f"--config.<field>=<value>; the fields, at configs/default.py's values:\n{fields}\n",
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("config", flag_values=flag_values)
    for field in config_fields.FLAG_FIELDS:
        if field.choices:  # absl lists them.
            flags.DEFINE_enum(
                field.name,
                None,
                field.choices,
                f"{field.help} Sets config.{field.name} (default: the config file's).",
                flag_values=flag_values,
            )
        else:
            _DEFINE_BY_TYPE[type(field.default)](
                field.name,
                None,
                f"{field.describe()} Sets config.{field.name} (default: the config file's).",
                flag_values=flag_values,
            )


def resolve_config(flag_values: flags.FlagValues = flags.FLAGS) -> ml_collections.ConfigDict:
    """The --config file with its --config.<field> overrides and the short flags, validated."""
    config = ml_collections.ConfigDict(flag_values.config)
    overrides = config_flags.get_override_values(flag_values["config"])
    for field in config_fields.FLAG_FIELDS:
        value = flag_values[field.name].value
        if value is None:
            continue
        if field.name in overrides and overrides[field.name] != value:
            raise errors.ConfigError(
                f"--{field.name}={value!r} and --config.{field.name}={overrides[field.name]!r} "
                "set the same field differently: give one of them."
            )
        config[field.name] = value
    config_fields.validate(config)
    return config


def configs_help() -> str:
    """The configs in configs/, each with its docstring's first line, as --help lists them; paths as --config takes
    them from the current directory."""
    import configs

    lines = ["", "configs (--config=PATH):"]
    for path in sorted(glob.glob(os.path.join(os.path.dirname(configs.__file__), "*.py"))):
        if os.path.basename(path) == "__init__.py":
            continue
        with open(path) as f:
            summary = (ast.get_docstring(ast.parse(f.read())) or "").split("\n")[0]
        shown = os.path.relpath(path)
        lines.append(f"  {path if shown.startswith('..') else shown}: {summary}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = resolve_config()
        if config.mode == "eval":
            api.evaluate_model(config)
        else:
            api.train_model(config)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    except preemption.Preempted as e:  # A distinct code, so that a job scheduler restarts the command.
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(preemption.EXIT_CODE)


if __name__ == "__main__":
    __doc__ = f"{__doc__}{configs_help()}"  # absl's --help prints __main__'s docstring.
    define_flags()
    app.run(main, flags_parser=logs.parse_all_flags)
