"""Which data a run uses: `DataConfig` (the ``data:`` section of recipes and suites, ``config.data`` in run.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from secateurs.config.validation import validate
from secateurs.errors import RunDirError

MAX_SEED = 2**32 - 1
"""Seeds are unsigned 32-bit integers: derived seeds (per epoch, per probe) must stay within torch's 64 bits."""

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

LEGACY_SPLIT = "tail"
"""The validation split of a run.json whose ``config.data`` records none (written before splits were
stratified): the last 1/12 of the training set."""

IMAGE_FOLDER_FIELDS = ("image_size", "channels", "strict", "memory_budget_mb", "cache_dir")
"""The fields only the ``imagefolder`` dataset reads (set on another dataset they are an error)."""


class DataConfig(BaseModel):
    """A dataset, where its files are, and how its validation split is carved.

    ``split``: ``stratified`` (default; every class gives its share, drawn with ``split_seed``) or
    ``tail`` (the last 1/12 of the training set as stored, as before stratified splits). The split
    seed is not the run's seed: runs of every seed, and the runs pruned from them, share one split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "fashion-mnist"
    dir: str | None = None
    split: Literal["stratified", "tail"] = "stratified"
    split_seed: Seed = 0
    image_size: int | None = Field(None, ge=1, le=4096)
    """imagefolder: images are resized (short side) and centre-cropped to this size (default 64)."""
    channels: Literal[1, 3] | None = None
    """imagefolder: 3 (RGB, default) or 1 (grayscale)."""
    strict: bool = False
    """imagefolder: refuse corrupt and non-image files instead of skipping them."""
    memory_budget_mb: float | None = Field(None, gt=0)
    """imagefolder: decoded images larger than this are memory-mapped from a cache file (default: half
    of the available memory)."""
    cache_dir: str | None = None
    """imagefolder: where that cache file goes when the data directory is read-only."""

    @classmethod
    def from_record(cls, recorded: Any, data_dir: str | None, where: str) -> DataConfig:
        """The `DataConfig` a run.json's ``config.data`` records, with ``data_dir`` (when given) replacing its dir.

        A record without ``split`` was trained on the `LEGACY_SPLIT`; `RunDirError` when there is no
        record, a `ConfigError` when it does not validate.
        """
        if not isinstance(recorded, dict) or "name" not in recorded:
            raise RunDirError(f"{where}: run.json does not record its dataset (config.data)")
        fields = {"split": LEGACY_SPLIT, **recorded, "dir": data_dir if data_dir is not None else recorded.get("dir")}
        data: DataConfig = validate(cls, fields, f"{where}: run.json config.data")
        return data
