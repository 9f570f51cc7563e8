"""Ops without a double backward, replaced by identical compositions that have one (`TwiceDifferentiableRewrites`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode


class TwiceDifferentiableRewrites(TorchFunctionMode):
    """Torch-function mode replacing ops without a double backward by identical compositions.

    ================================  ====================================================
    op (as called from Python)        replacement
    ================================  ====================================================
    ``F.hardsigmoid(x)``              ``F.relu6(x + 3) / 6`` (same function; derivative
                                      equal except on the kinks ±3, a null set)
    ``F.scaled_dot_product_attention``  the same call on the math kernel (``SDPBackend.MATH``)
    ================================  ====================================================

    Only calls that go through the Python functions are seen (``nn.Hardsigmoid``,
    ``nn.MultiheadAttention`` and torchvision's blocks do); direct ``torch.ops.aten`` calls are not.
    In-place flags are ignored (a new tensor is returned), which modules tolerate because they use the
    return value.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is F.hardsigmoid:
            return F.relu6(args[0] + 3.0) / 6.0
        if func is F.scaled_dot_product_attention:
            with sdpa_kernel(SDPBackend.MATH):
                return func(*args, **kwargs)
        return func(*args, **kwargs)
