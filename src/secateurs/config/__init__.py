"""Validated configuration: what to train, what to prune, recipes, and the YAML they are read from.

Every schema is a frozen pydantic model whose unknown keys are errors; `validate` turns a
validation failure into one `ConfigError` line naming the key. Nothing here knows the registries:
whether a method takes per-layer targets, or what its ``options`` mean, is the method's to check
(`secateurs.methods.base.Method.check_config`).
"""

from secateurs.config.data import IMAGE_FOLDER_FIELDS, LEGACY_SPLIT, MAX_SEED, DataConfig, Seed
from secateurs.config.prune import PruneConfig, read_layer_sparsity
from secateurs.config.recipe import CalibrationConfig, MeasureConfig, Recipe, RobustnessConfig, load_recipe
from secateurs.config.train import TrainConfig
from secateurs.config.validation import format_validation_error, validate
from secateurs.config.yaml import MAX_YAML_VALUES, expanded_size, load_yaml, parse_overrides, read_yaml, set_path

__all__ = [
    "IMAGE_FOLDER_FIELDS",
    "LEGACY_SPLIT",
    "MAX_SEED",
    "MAX_YAML_VALUES",
    "CalibrationConfig",
    "DataConfig",
    "MeasureConfig",
    "PruneConfig",
    "Recipe",
    "RobustnessConfig",
    "Seed",
    "TrainConfig",
    "expanded_size",
    "format_validation_error",
    "load_recipe",
    "load_yaml",
    "parse_overrides",
    "read_layer_sparsity",
    "read_yaml",
    "set_path",
    "validate",
]
