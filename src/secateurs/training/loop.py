"""The training loop: `Trainer` with callbacks, validation points and resumable checkpoints.

The budget is ``config.epochs`` or ``config.steps`` (`TrainConfig.total_steps`). Validation, the
epoch record and a checkpoint happen at every *validation point*: the end of every epoch (and the last
step), or with ``config.eval_every = N`` after every N optimizer steps (and the last step).

Determinism: the shuffle and augmentation of epoch ``e`` depend only on ``(seed, e)``; the global RNG
(dropout) is re-seeded from ``(seed, e)`` at the start of each epoch and from ``(seed, e, step)`` after
a validation point inside an epoch; the LR is a pure function of the step. A run checkpointed at a
validation point and resumed therefore ends with the same weights as an uninterrupted run (same thread
count, same machine): a resume inside an epoch replays that epoch's batches up to the checkpoint
without training on them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from secateurs.config import TrainConfig
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.types import Splits, TensorData
from secateurs.errors import TrainingDiverged, UsageError
from secateurs.metrics.accuracy import Evaluation, evaluate
from secateurs.runtime import distributed
from secateurs.sparsity.masks import MaskStore
from secateurs.training.checkpoint import Checkpoint, apply_checkpoint, read_checkpoint, save_checkpoint
from secateurs.training.optim import build_optimizer, learning_rate, set_learning_rate

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Callback:
    """Hooks into `Trainer.fit`; every method is optional. Stateful callbacks save their state."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once, after a resume has restored the trainer's state."""

    def on_step_begin(self, trainer: Trainer) -> None:
        """Called before the forward pass of optimizer step ``trainer.step``."""

    def on_step_end(self, trainer: Trainer) -> None:
        """Called after optimizer step ``trainer.step - 1`` (``trainer.step`` steps are done)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after validation at each validation point: the end of each (possibly partial) epoch,
        or every ``eval_every`` steps; may add to ``record``."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once when training stops for any reason."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


@dataclass
class TrainSummary:
    steps: int
    epochs: float
    stop_reason: str
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 7_919 + epoch * 104_729 + 1) % (2**63 - 1)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The global seed after a validation point inside epoch ``epoch`` at optimizer step ``step``."""
    return (epoch_seed(seed, epoch) + step * 15_485_863) % (2**63 - 1)


class Trainer:
    """Train ``model`` on ``splits.train`` with ``config``; validate on ``splits.val`` every epoch.

    ``masks`` (optional) is bound to the optimizer so masked weights stay exactly zero. With a
    ``checkpoint_dir`` the full state is saved atomically at every epoch end and `fit(resume=True)`
    continues from the last one.

    Data-parallel (``shard=(rank, world)`` with ``world > 1``, inside a torch.distributed process group,
    ``parallel`` = the DDP wrapper; see `secateurs.runtime.distributed.trainer_options`): ``batch_size``
    stays the *global* batch, each rank takes ``batch_size / world`` examples of every global batch, so
    the same global batch and seed give the same optimisation as one process (up to float summation
    order; dropout and augmentation draw per-rank random numbers). Losses, train and validation
    metrics are reduced over ranks, so every rank sees the same record and stops at the same step;
    BatchNorm buffers are rank 0's after every epoch. Only the rank given a ``checkpoint_dir`` (rank 0)
    writes checkpoints; on resume it reads them and broadcasts the state to the others.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        config: TrainConfig,
        *,
        seed: int = 0,
        masks: MaskStore | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: Path | None = None,
        progress: bool = False,
        loss_fn: LossFn | None = None,
        shard: tuple[int, int] = (0, 1),
        parallel: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.splits = splits
        self.config = config
        self.seed = seed
        self.masks = masks
        self.callbacks = list(callbacks)
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.loss_fn: LossFn = loss_fn or (
            lambda logits, y: nn.functional.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        )
        self.channels_last = config.channels_last if config.channels_last is not None else has_conv(model)
        dataset = splits.dataset
        self.normalization = Normalization(dataset.mean, dataset.std)
        augment = dataset.augment if config.augment == "auto" else config.augment
        train = _head(splits.train, config.train_subset)
        self.shard = shard
        world = distributed.World(rank=shard[0], size=shard[1])
        self.train_loader = BatchLoader(
            train,
            distributed.per_rank_batch_size(config.batch_size, world),
            self.normalization,
            shuffle=True,
            seed=seed,
            augment=augment,
            drop_last=len(train) >= config.batch_size,
            channels_last=self.channels_last,
            shard=shard,
        )
        self.steps_per_epoch = max(1, len(self.train_loader))
        self.total_steps = config.total_steps(self.steps_per_epoch)
        warmup = config.warmup_steps_for(self.steps_per_epoch)
        if warmup > self.total_steps > 0:
            raise UsageError(
                f"the warm-up ({warmup} steps) exceeds the training budget ({self.total_steps} steps, "
                f"{config.describe_budget()} at {self.steps_per_epoch} steps per epoch)"
            )
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.train_module = parallel(model) if parallel is not None else model
        self.device = next(iter(model.parameters()), torch.zeros(())).device
        self.optimizer = build_optimizer(model.parameters(), config)
        if masks is not None:
            masks.bind_optimizer(self.optimizer)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.train_seconds = 0.0
        self._window = _Window()

    # ---------------------------------------------------------------------------------- helpers
    def loader(self, split: str) -> BatchLoader:
        """An evaluation loader over ``val`` or ``test`` (respecting ``eval_subset``)."""
        data = {"val": self.splits.val, "test": self.splits.test, "train": self.splits.train}[split]
        return BatchLoader(
            _head(data, self.config.eval_subset),
            self.config.eval_batch_size,
            self.normalization,
            channels_last=self.channels_last,
        )

    def evaluate(self, split: str = "val") -> Evaluation:
        """Accuracy and loss on ``split``; data-parallel ranks each evaluate a slice and add up."""
        rank, world = self.shard
        if world == 1:
            return evaluate(self.model, _on_device(self.loader(split), self.device))
        loader = self.loader(split)
        items = distributed.split_items(len(loader.data), rank, world)
        loader.data = loader.data.subset(slice(items.start, items.stop))
        part = evaluate(self.model, _on_device(loader, self.device))
        loss_sum = part.loss * part.count if part.count else 0.0
        totals = distributed.all_reduce_sum(
            torch.tensor([part.accuracy * part.count, loss_sum, part.count], dtype=torch.float64)
        )
        count = round(float(totals[2]))
        if count == 0:
            return Evaluation(accuracy=0.0, loss=float("nan"), count=0)
        return Evaluation(accuracy=round(float(totals[0])) / count, loss=float(totals[1]) / count, count=count)

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (callbacks call this)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def epochs_done(self) -> float:
        return self.step / self.steps_per_epoch

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    def _save(self) -> None:
        if self.checkpoint_dir is not None:
            save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.masks, self.state_dict())

    def _restore(self) -> bool:
        checkpoint = read_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        if self.shard[1] > 1:  # rank 0 read it; every rank applies the same bytes
            checkpoint = _broadcast_checkpoint(checkpoint, is_source=self.shard[0] == 0)
        if checkpoint is None:
            return False
        state = apply_checkpoint(checkpoint, self.model, self.optimizer, self.masks)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        for callback, saved in zip(self.callbacks, state.get("callbacks", []), strict=False):
            callback.load_state_dict(saved)
        log.info("resumed at epoch %d, step %d", self.epoch, self.step)
        return True

    # ------------------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> TrainSummary:
        """Train until the budget (``config.epochs``, fractions allowed, or ``config.steps``) is spent or
        a callback stops the run.

        Mutates the model's weights (and the masks' originals). Returns the per-epoch history.
        """
        if resume:
            self._restore()
        for callback in self.callbacks:
            callback.on_train_begin(self)
        self._window = _Window()
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.progress,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        try:
            while self.step < self.total_steps and self.stop_reason is None:
                self._run_epoch(progress)
        finally:
            progress.close()
        if self.stop_reason is None:
            self.stop_reason = "budget"
        for callback in self.callbacks:
            callback.on_train_end(self)
        final = dict(self.history[-1]) if self.history else {}
        return TrainSummary(
            steps=self.step,
            epochs=self.epochs_done,
            stop_reason=self.stop_reason,
            train_seconds=self.train_seconds,
            history=self.history,
            final=final,
        )

    def _run_epoch(self, progress: tqdm) -> None:
        epoch = self.epoch
        rank = self.shard[0]
        torch.manual_seed(epoch_seed(self.seed, epoch) + rank)
        self.train_loader.set_epoch(epoch)
        skip = self.step - epoch * self.steps_per_epoch  # > 0 when resuming from a checkpoint inside the epoch
        if skip > 0:
            torch.manual_seed(step_seed(self.seed, epoch, self.step) + rank)
        self.train_module.train()
        every = self.config.eval_every
        last = len(self.train_loader) - 1
        completed = True
        for index, (x, y) in enumerate(self.train_loader):
            if index < skip:
                continue  # the batch (and its augmentation draws) is replayed, not trained on
            if self.step >= self.total_steps or self.stop_reason is not None:
                completed = False
                break
            self._train_step(x, y, epoch, progress)
            due = every is not None and self.step % every == 0
            if due and index < last and self.step < self.total_steps and self.stop_reason is None:
                self._validation_point(progress, epoch_number=epoch + 1)
                torch.manual_seed(step_seed(self.seed, epoch, self.step) + rank)
        finished = self.step >= self.total_steps or self.stop_reason is not None
        if completed or finished:
            self.epoch += 1
        if every is None or finished or self.step % every == 0:
            self._validation_point(progress, epoch_number=self.epoch)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, progress: tqdm) -> None:
        world = self.shard[1]
        for callback in self.callbacks:
            callback.on_step_begin(self)
        set_learning_rate(self.optimizer, learning_rate(self.config, self.step, self.steps_per_epoch))
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        logits = self.train_module(x)
        loss = self.loss_fn(logits, y)
        checked = loss.detach() if world == 1 else distributed.all_reduce_mean(loss.detach().clone())
        if not torch.isfinite(checked):  # reduced over ranks: every rank stops at the same step
            raise TrainingDiverged(
                f"the loss became {float(checked)} at epoch {epoch + 1}, step {self.step + 1}; "
                + (f"the last good checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir else "stopping")
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        window = self._window
        window.loss_sum += loss.detach().cpu() * y.numel()
        window.correct += (logits.detach().argmax(1) == y).sum().cpu()
        window.seen += y.numel()
        progress.update(1)
        for callback in self.callbacks:
            callback.on_step_end(self)

    def _validation_point(self, progress: tqdm, *, epoch_number: int) -> None:
        """Validate, record the steps since the last point, run the callbacks, checkpoint.

        ``epoch_number`` is the 1-based epoch the last step belongs to (the record's ``epoch``).
        """
        window = self._window
        started = time.perf_counter()
        self.train_seconds += started - window.started
        loss_sum, correct, seen = window.loss_sum, window.correct, window.seen
        if self.shard[1] > 1:
            sums = torch.tensor([float(loss_sum), float(correct), seen], dtype=torch.float64)
            totals = distributed.all_reduce_sum(sums)
            loss_sum, correct, seen = totals[0], totals[1].round().long(), round(float(totals[2]))
            _broadcast_buffers_(self.model)
        self._check_weights(epoch_number - 1)
        validation = self.evaluate("val")
        record: dict[str, Any] = {
            "epoch": epoch_number,
            "epochs": round(self.epochs_done, 6),
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": int(correct) / max(seen, 1),
            "val_loss": validation.loss,
            "val_accuracy": validation.accuracy,
            "seconds": time.perf_counter() - window.started,
        }
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)
        self.history.append(record)
        progress.set_postfix(val=f"{validation.accuracy:.4f}")
        log.info(
            "epoch %d%s: train loss %.4f acc %.4f, val acc %.4f (%.1f s)",
            epoch_number,
            "" if self.config.eval_every is None else f", step {self.step}",
            record["train_loss"],
            record["train_accuracy"],
            validation.accuracy,
            record["seconds"],
        )
        self._save()
        self._window = _Window()

    def _check_weights(self, epoch: int) -> None:
        for name, parameter in self.model.named_parameters():
            if not torch.isfinite(parameter).all():
                raise TrainingDiverged(
                    f"parameter {name} became NaN/Inf in epoch {epoch + 1} (step {self.step}); "
                    + (f"the last good checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir else "stopping")
                )


def _on_device(batches: BatchLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in batches:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def _broadcast_buffers_(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): the model saved is rank 0's."""
    for buffer in model.buffers():
        distributed.broadcast_(buffer.data.view(torch.uint8) if buffer.dtype == torch.bool else buffer.data)


def _broadcast_checkpoint(checkpoint: Checkpoint | None, *, is_source: bool) -> Checkpoint | None:
    """Rank 0's checkpoint (read from its disk) on every rank, or None everywhere."""
    header = None
    if is_source and checkpoint is not None:
        header = {"state": checkpoint.state, "masks": checkpoint.masks is not None, "source": str(checkpoint.source)}
    header = distributed.broadcast_json(header)
    if header is None:
        return None
    own = checkpoint if is_source else None
    return Checkpoint(
        model=distributed.broadcast_tensors(own.model if own else None),
        masks=distributed.broadcast_tensors(own.masks if own else None) if header["masks"] else None,
        optimizer=distributed.broadcast_tensors(own.optimizer if own else None),
        state=header["state"],
        source=Path(header["source"]),
    )


def epoch_steps(splits: Splits, config: TrainConfig) -> tuple[int, int]:
    """``(steps per epoch, total steps)`` a one-process `Trainer` takes on ``splits`` with ``config``.

    For checks made before any training (a gradual schedule must end within the budget); the trainer
    itself counts the batches of its loader, and a test keeps the two equal.
    """
    examples = len(_head(splits.train, config.train_subset))
    per_epoch = examples // config.batch_size if examples >= config.batch_size else 1
    return per_epoch, config.total_steps(per_epoch)


def budget_epochs(splits: Splits, config: TrainConfig) -> float:
    """The budget of ``config`` in epochs of ``splits``: ``epochs`` as given, or steps / steps per epoch."""
    return config.budget_epochs(epoch_steps(splits, config)[0])


@dataclass
class _Window:
    """What the steps since the last validation point add up to (reset at every point)."""

    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    seen: int = 0
    started: float = field(default_factory=time.perf_counter)


def _head(data: TensorData, count: int | None) -> TensorData:
    if count is None or count >= len(data):
        return data
    return data.subset(slice(0, count))
