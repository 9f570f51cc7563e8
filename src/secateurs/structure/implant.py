"""Neural implants (HAP, arXiv 2101.08940, §2.2 of METHODS.md): a k×k filter replaced by a 1×1 one.

`ImplantedConv2d` stands in for an ``nn.Conv2d`` some of whose output channels ("slots") were
*implanted*: their k×k×C_in kernels are gone and a zero-initialised, trainable 1×1 convolution over
the same input channels, with the same stride, writes into the same slots, so batch norm and the
next layer keep those channels. The other slots keep their full kernels in ``kept``::

    out = cat([kept(x), implant(crop(x))], dim=1)[:, order]

``implant`` samples the input at the centre tap of the original kernel: for kernel k, padding p,
dilation d and stride s, output position o of the k×k convolution is centred on input o·s − p +
d(k−1)/2, so the 1×1 convolution gets padding q = p − d(k−1)/2 when q ≥ 0 and crops −q pixels from
each side otherwise. For the usual "same" convolutions (3×3, padding 1) q = 0: no padding, as in the
paper. Both children are ordinary ``nn.Conv2d`` leaves, so parameter and MAC counters, optimizers,
``torch.onnx.export`` and masks see them without special cases.

`ImplantHandler` (the module's layer handler) makes Torch-Pruning treat it as one customized layer
in every dependency graph secateurs builds, so channels can still be removed after implanting (all
of a layer's implants may go; its full filters may not all go).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch_pruning as tp
from torch import nn

from secateurs.errors import StructureError
from secateurs.layers import ChannelChange, LayerHandler, LayerSize, Role, register_layer_handler


def implant_geometry(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(padding, crop)`` of the 1×1 implant aligned with ``conv``'s centre tap, or None if impossible.

    Impossible: grouped convolutions, non-zero padding modes, string paddings, and even effective
    kernel extents (no centre tap).
    """
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    padding: list[int] = []
    crop: list[int] = []
    for kernel, pad, dilation in zip(conv.kernel_size, conv.padding, conv.dilation, strict=True):
        extent = dilation * (kernel - 1)
        if extent % 2:
            return None
        offset = int(pad) - extent // 2
        padding.append(max(offset, 0))
        crop.append(max(-offset, 0))
    return (padding[0], padding[1]), (crop[0], crop[1])


def _subset_conv(conv: nn.Conv2d, rows: Sequence[int]) -> nn.Conv2d:
    """A copy of ``conv`` keeping only output channels ``rows`` (weights copied)."""
    clone = nn.Conv2d(
        conv.in_channels,
        len(rows),
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    index = torch.tensor(list(rows), dtype=torch.long, device=conv.weight.device)
    with torch.no_grad():
        clone.weight.copy_(conv.weight.index_select(0, index))
        if conv.bias is not None and clone.bias is not None:
            clone.bias.copy_(conv.bias.index_select(0, index))
    return clone


class ImplantedConv2d(nn.Module):
    """Output channels of a convolution split into full k×k filters (``kept``) and 1×1 ``implant``\\s.

    ``implanted`` lists the implanted slots (output-channel indices of the original layer). The
    buffer ``order`` maps slot j to its position in ``cat([kept(x), implant(x)])``; it is rebuilt
    from the slots, so it is not saved in state dicts (`plan.json` records the slots).
    """

    order: torch.Tensor

    def __init__(self, kept: nn.Conv2d, implant: nn.Conv2d, implanted: Sequence[int], crop: tuple[int, int]) -> None:
        super().__init__()
        slots = kept.out_channels + implant.out_channels
        self.kept = kept
        self.implant = implant
        self.crop = (int(crop[0]), int(crop[1]))
        self.opaque = False
        """True only while a dependency graph is traced (see `_traceable_forward`)."""
        self.register_buffer("order", _order(slots, implanted, kept.weight.device), persistent=False)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, implanted: Sequence[int], *, name: str = "conv", init: str = "zero"
    ) -> ImplantedConv2d:
        """Replace slots ``implanted`` of ``conv`` by 1×1 implants (``conv`` untouched).

        ``init``: ``zero`` (the paper: weights and bias 0) or ``centre`` (the centre tap of the
        original kernel and its bias, the released code's unused alternative).

        Raises `StructureError` naming ``name`` when the layer cannot take implants (grouped, even
        kernel, non-zero padding mode) or when every slot or no slot would be implanted.
        """
        geometry = implant_geometry(conv)
        if geometry is None:
            raise StructureError(
                f"layer {name!r} cannot take neural implants (needs groups=1, zero padding and an odd kernel extent)"
            )
        slots = sorted({int(i) for i in implanted})
        if not slots or slots[0] < 0 or slots[-1] >= conv.out_channels or len(slots) >= conv.out_channels:
            raise StructureError(
                f"layer {name!r}: implanted slots must be distinct, in [0, {conv.out_channels}) and leave at "
                f"least one full filter; got {len(slots)} slot(s)"
            )
        padding, crop = geometry
        kept_rows = [i for i in range(conv.out_channels) if i not in set(slots)]
        implant = nn.Conv2d(
            conv.in_channels,
            len(slots),
            1,
            stride=conv.stride,  # type: ignore[arg-type]
            padding=padding,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        nn.init.zeros_(implant.weight)
        if implant.bias is not None:
            nn.init.zeros_(implant.bias)
        if init == "centre":
            index = torch.tensor(slots, dtype=torch.long, device=conv.weight.device)
            with torch.no_grad():
                centre = conv.weight.index_select(0, index)[:, :, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2]
                implant.weight.copy_(centre[:, :, None, None])
                if implant.bias is not None and conv.bias is not None:
                    implant.bias.copy_(conv.bias.index_select(0, index))
        elif init != "zero":
            raise StructureError(f"implant init must be 'zero' or 'centre', got {init!r}")
        return cls(_subset_conv(conv, kept_rows), implant, slots, crop)

    @property
    def out_channels(self) -> int:
        return self.kept.out_channels + self.implant.out_channels

    @property
    def in_channels(self) -> int:
        return self.kept.in_channels

    def implanted_slots(self) -> list[int]:
        """The implanted output-channel indices, ascending."""
        positions = self.order.tolist()
        return [slot for slot, position in enumerate(positions) if position >= self.kept.out_channels]

    def kept_slots(self) -> list[int]:
        positions = self.order.tolist()
        return [slot for slot, position in enumerate(positions) if position < self.kept.out_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The k×k outputs and the implant outputs, interleaved back into slot order."""
        if self.opaque:
            return self._traceable_forward(x)
        crop_h, crop_w = self.crop
        source = x
        if crop_h or crop_w:
            source = x[:, :, crop_h : x.shape[2] - crop_h, crop_w : x.shape[3] - crop_w]
        if not self.implant.out_channels:  # every implanted slot was removed later
            return self.kept(x).index_select(1, self.order)
        combined = torch.cat([self.kept(x), self.implant(source)], dim=1)
        return combined.index_select(1, self.order)

    def _traceable_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same output as one convolution with the (detached) equivalent kernel.

        Used while Torch-Pruning traces the model: its tracer walks the autograd graph, and the
        concatenation inside the real forward would look like a concat of two copies of the input
        channels. One opaque convolution makes the layer look like an ordinary Conv2d node.
        """
        kept = self.kept
        bias = None
        if kept.bias is not None and self.implant.bias is not None:
            bias = torch.cat([kept.bias, self.implant.bias]).index_select(0, self.order).detach()
        return nn.functional.conv2d(
            x,
            self.effective_weight().detach(),
            bias,
            kept.stride,
            kept.padding,
            kept.dilation,
        )

    def effective_weight(self) -> torch.Tensor:
        """The equivalent dense k×k kernel (C_out, C_in, kh, kw): implants sit at the centre tap."""
        return self.compose(self.kept.weight, self.implant.weight)

    def compose(self, kept: torch.Tensor, implant: torch.Tensor) -> torch.Tensor:
        """Place tensors shaped like ``kept.weight`` / ``implant.weight`` into the effective layout."""
        kernel_h, kernel_w = self.kept.kernel_size
        out = kept.new_zeros(self.out_channels, kept.shape[1], kernel_h, kernel_w)
        kept_slots = torch.tensor(self.kept_slots(), dtype=torch.long, device=kept.device)
        implanted = torch.tensor(self.implanted_slots(), dtype=torch.long, device=kept.device)
        out = out.index_copy(0, kept_slots, kept)
        centre = out.new_zeros(len(implanted), kept.shape[1], kernel_h, kernel_w)
        centre[:, :, kernel_h // 2, kernel_w // 2] = implant[:, :, 0, 0]
        return out.index_copy(0, implanted, centre)

    def extra_repr(self) -> str:
        return f"slots={self.out_channels}, implanted={self.implant.out_channels}, crop={self.crop}"


def _order(slots: int, implanted: Sequence[int], device: torch.device) -> torch.Tensor:
    implanted_set = {int(i) for i in implanted}
    kept = [i for i in range(slots) if i not in implanted_set]
    position = {slot: index for index, slot in enumerate([*kept, *sorted(implanted_set)])}
    return torch.tensor([position[slot] for slot in range(slots)], dtype=torch.long, device=device)


@register_layer_handler(ImplantedConv2d)
class ImplantHandler(LayerHandler[ImplantedConv2d]):
    """`ImplantedConv2d` as one layer: read through its equivalent dense kernel, pruned slot by slot.

    Its leaves are ``kept`` (the full k×k filters) and ``implant`` (the 1×1 ones); tensors shaped like
    theirs compose into the dense layout with the implants at the centre tap (`ImplantedConv2d.compose`),
    per-leaf channel values into slot order (``order``). Torch-Pruning does not know the type, so
    removing slots or input channels is done here, on both children.
    """

    composite = True
    native = False

    def channels(self, module: ImplantedConv2d, role: Role) -> int:
        return module.out_channels if role == "out" else module.in_channels

    def leaves(self, module: ImplantedConv2d) -> list[tuple[str, nn.Module]]:
        return [("kept", module.kept), ("implant", module.implant)]

    def compose(self, module: ImplantedConv2d, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        return module.compose(pieces[0], pieces[1])

    def compose_out(self, module: ImplantedConv2d, values: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([values[0], values[1]]).index_select(0, module.order.to(values[0].device))

    def rows(self, module: ImplantedConv2d, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        if role == "out":
            return tensor.index_select(0, indices).reshape(len(indices), -1)
        return tensor.index_select(1, indices).transpose(0, 1).reshape(len(indices), -1)

    def size(self, module: ImplantedConv2d, change: ChannelChange) -> LayerSize:
        """k·k·C_in per kept full filter, C_in per kept implant, plus biases."""
        kept_out = int(change.out_kept.sum())
        area = module.kept.kernel_size[0] * module.kept.kernel_size[1]
        slots = torch.zeros(module.out_channels, dtype=torch.bool)
        slots[module.implanted_slots()] = True
        implants = int((slots & change.out_kept).sum())
        weight = ((kept_out - implants) * area + implants) * change.in_kept
        biases = kept_out if module.kept.bias is not None else 0
        return LayerSize(weight + biases, weight)

    def remove_channels(self, module: ImplantedConv2d, indices: Sequence[int], role: Role) -> None:
        if role == "in":
            tp.pruner.function.prune_conv_in_channels(module.kept, list(indices))
            tp.pruner.function.prune_conv_in_channels(module.implant, list(indices))
            return
        removed = {int(i) for i in indices}
        kept_slots, implanted_slots = module.kept_slots(), module.implanted_slots()
        kept_rows = [row for row, slot in enumerate(kept_slots) if slot in removed]
        implant_rows = [row for row, slot in enumerate(implanted_slots) if slot in removed]
        if len(kept_rows) == len(kept_slots):
            raise StructureError("removing these channels would leave an implanted layer without a full filter")
        if kept_rows:
            tp.pruner.function.prune_conv_out_channels(module.kept, kept_rows)
        if implant_rows:
            tp.pruner.function.prune_conv_out_channels(module.implant, implant_rows)
        survivors = [slot for slot in range(len(kept_slots) + len(implanted_slots)) if slot not in removed]
        remaining_implants = [survivors.index(slot) for slot in implanted_slots if slot not in removed]
        module.order = _order(len(survivors), remaining_implants, module.order.device)

    @contextlib.contextmanager
    def tracing(self, module: ImplantedConv2d) -> Iterator[None]:
        """The module looks like one convolution to Torch-Pruning's tracer (`ImplantedConv2d.opaque`)."""
        module.opaque = True
        try:
            yield
        finally:
            module.opaque = False
