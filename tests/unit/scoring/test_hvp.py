"""Tests of the HVP engines against dense Hessians of tiny float64 models.

Tolerances:
- double-backward (plain and rewritten) and forward-over-reverse are exact algorithms: they differ
  from the dense Hessian (`torch.autograd.functional.hessian`, itself double backward over a flat
  vector) only by float64 rounding, a few ulps times the depth of these ~5-layer models (~1e-14).
  1e-10 relative leaves four orders of margin while still failing on any real mistake (a missing
  term, a wrong batch weight is ≥1e-3).
- finite-difference: the step rule predicts a relative error (3ε)^(2/3)/2 (3.8e-11 in float64,
  2.5e-5 in float32) up to problem constants (the length scale ℓ and the rounding magnitude G enter
  as factors of order 1–10); the tests assert 100× the prediction, and that the rule's error is within
  10× of the best step of a scan over nine decades (the rule sits at the bottom of the V-shaped error).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from secateurs.errors import StructureError
from secateurs.scoring.hvp import DoubleBackwardEngine
from secateurs.scoring.hvp_functional import FiniteDifferenceEngine, central_difference_step
from secateurs.scoring.hvp_rewrites import TwiceDifferentiableRewrites
from secateurs.scoring.hvp_select import ENGINES, is_unsupported_derivative, make_engine, select_engine

pytestmark = pytest.mark.usefixtures("one_thread")

EXACT_TOLERANCE = 1e-10
FD_PREDICTED = {
    torch.float64: (3 * torch.finfo(torch.float64).eps) ** (2 / 3) / 2,
    torch.float32: (3 * torch.finfo(torch.float32).eps) ** (2 / 3) / 2,
}


# --------------------------------------------------------------------------------------------------
# Fixtures: tiny models, data, exact references


def tanh_mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype).eval()


class TinyConvNet(nn.Module):
    """Conv → BN (eval, non-trivial running statistics) → activation → conv → BN → act → pool → Linear."""

    def __init__(self, activation: type[nn.Module] = nn.Tanh, gate: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.act2 = activation()
        self.gate = gate() if gate is not None else None
        self.classifier = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        if self.gate is not None:  # squeeze-and-excitation-like gate (MobileNetV3 uses hard-sigmoid)
            x = x * self.gate(x.mean((2, 3), keepdim=True) * 4.0)
        return self.classifier(x.mean((2, 3)))


def tiny_convnet(
    activation: type[nn.Module] = nn.Tanh, gate: type[nn.Module] | None = None, dtype: torch.dtype = torch.float64
) -> nn.Module:
    torch.manual_seed(2)
    model = TinyConvNet(activation, gate)
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.num_batches_tracked.fill_(7)
    return model.to(dtype).eval()


def mlp_batches(dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)) for n in (7, 4)]


def conv_batches(dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(4)
    return [
        (torch.randn(n, 2, 7, 7, generator=g, dtype=dtype) * 2.0, torch.randint(0, 3, (n,), generator=g))
        for n in (5, 3)
    ]


def hessian_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def probes_for(weights: list[torch.Tensor], seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, w.shape, generator=g).to(w.dtype) * 2 - 1 for w in weights]


def dense_hvp(
    model: nn.Module,
    weights: list[torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    probes: list[torch.Tensor],
    loss_fn=F.cross_entropy,
) -> list[torch.Tensor]:
    """H·v from the dense Hessian of the loss on *all batches concatenated* (so the size-weighted mean
    of the engines is checked too), as a function of the flattened weights, in float64."""
    reference = copy.deepcopy(model).double()
    names = {id(p): n for n, p in model.named_parameters()}
    weight_names = [names[id(w)] for w in weights]
    constants = {n: p.detach() for n, p in reference.named_parameters() if n not in weight_names}
    constants.update(dict(reference.named_buffers()))
    inputs = torch.cat([x for x, _ in batches]).double()
    targets = torch.cat([y for _, y in batches])
    shapes = [w.shape for w in weights]
    sizes = [w.numel() for w in weights]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(weight_names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes)), strict=True))
        return loss_fn(torch.func.functional_call(reference, {**constants, **parts}, (inputs,)), targets)

    flat_w = torch.cat([w.detach().double().reshape(-1) for w in weights])
    hessian = torch.autograd.functional.hessian(loss, flat_w)
    product = hessian @ torch.cat([v.double().reshape(-1) for v in probes])
    return [t.reshape(s) for t, s in zip(product.split(sizes), shapes, strict=True)]


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    fa = torch.cat([t.double().reshape(-1) for t in a])
    fb = torch.cat([t.double().reshape(-1) for t in b])
    return float((fa - fb).norm() / fb.norm())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bit patterns of every parameter and buffer (distinguishes -0.0 from 0.0, NaN payloads)."""
    state = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        t = tensor.detach().clone()
        state[name] = (
            t.view(torch.int64) if t.dtype == torch.float64 else t.view(torch.int32) if t.dtype == torch.float32 else t
        )
    return state


SMOOTH_CASES = {
    "tanh-mlp": (tanh_mlp, mlp_batches),
    "conv-bn-tanh": (tiny_convnet, conv_batches),
}


# --------------------------------------------------------------------------------------------------
# Exactness on smooth models


@pytest.mark.parametrize("case", sorted(SMOOTH_CASES))
@pytest.mark.parametrize("engine", ["double-backward", "double-backward-rewritten", "forward-over-reverse"])
def test_exact_engines_match_dense_hessian(case: str, engine: str) -> None:
    build, data = SMOOTH_CASES[case]
    model, batches = build(), data()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    expected = dense_hvp(model, weights, batches, probes)
    product = make_engine(engine, model, weights, batches, F.cross_entropy).hvp(probes)
    assert relative_error(product, expected) < EXACT_TOLERANCE
    assert [p.shape for p in product] == [w.shape for w in weights]
    assert all(p.dtype == w.dtype for p, w in zip(product, weights, strict=True))


@pytest.mark.parametrize("case", sorted(SMOOTH_CASES))
def test_finite_difference_reaches_predicted_accuracy_float64(case: str) -> None:
    build, data = SMOOTH_CASES[case]
    model, batches = build(), data()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    expected = dense_hvp(model, weights, batches, probes)
    engine = FiniteDifferenceEngine(model, weights, batches, F.cross_entropy)
    error = relative_error(engine.hvp(probes), expected)
    assert error < 100 * FD_PREDICTED[torch.float64], error
    # The rule sits near the bottom of the error-versus-step curve.
    rule = engine.last_step
    assert rule is not None
    scan = []
    for exponent in range(-4, 5):
        step = rule * 10.0**exponent
        scan.append(
            relative_error(
                FiniteDifferenceEngine(model, weights, batches, F.cross_entropy, step=step).hvp(probes), expected
            )
        )
    assert error <= 10 * min(scan), (error, scan)
    assert scan[0] > 10 * error and scan[-1] > 10 * error  # both arms of the V exist


def test_finite_difference_float32_in_own_dtype() -> None:
    model = tiny_convnet(dtype=torch.float32)
    batches = conv_batches(torch.float32)
    weights = hessian_weights(model)
    probes = probes_for(weights)
    expected = dense_hvp(model, weights, batches, probes)
    engine = FiniteDifferenceEngine(model, weights, batches, F.cross_entropy, dtype=None)
    error = relative_error(engine.hvp(probes), expected)
    assert error < 100 * FD_PREDICTED[torch.float32], error
    # Upcasting a float32 model to float64 gives the float64 accuracy at the float32 weights.
    upcast = FiniteDifferenceEngine(model, weights, batches, F.cross_entropy).hvp(probes)
    assert upcast[0].dtype == torch.float32
    assert relative_error(upcast, expected) < 1e-6  # float32 rounding of the returned product only


def test_step_rule_formula() -> None:
    weights = [torch.full((4,), 3.0, dtype=torch.float64)]  # ‖w‖ = 6
    probes = [torch.ones(4, dtype=torch.float64)]  # ‖v‖ = 2
    eps = torch.finfo(torch.float64).eps
    assert central_difference_step(weights, probes, torch.float64) == pytest.approx((3 * eps) ** (1 / 3) * 7 / 2)


# --------------------------------------------------------------------------------------------------
# Ops without double backward: hard-sigmoid, once_differentiable custom Functions


def test_hardswish_supports_double_backward_in_this_torch() -> None:
    """hard-swish has a double backward (torch ≥ 2.x); auto keeps the fast engine, and its curvature
    (second derivative 1/3 on (−3, 3)) matches float64 finite differences."""
    model, batches = tiny_convnet(nn.Hardswish), conv_batches()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    selection = select_engine(model, weights, batches, F.cross_entropy, probes)
    assert selection.name == "double-backward" and not selection.skipped
    reference = FiniteDifferenceEngine(model, weights, batches, F.cross_entropy).hvp(probes)
    assert relative_error(selection.product, reference) < 1e-7
    assert relative_error(selection.product, dense_hvp(model, weights, batches, probes)) < EXACT_TOLERANCE


def mobilenetv3_like() -> nn.Module:
    """Hard-swish activations and a hard-sigmoid squeeze-excitation gate, as in MobileNetV3."""
    return tiny_convnet(nn.Hardswish, gate=nn.Hardsigmoid)


def test_hardsigmoid_falls_back_to_rewrite() -> None:
    model, batches = mobilenetv3_like(), conv_batches()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    selection = select_engine(model, weights, batches, F.cross_entropy, probes)
    assert selection.name == "double-backward-rewritten"
    assert "hardsigmoid_backward" in selection.skipped["double-backward"]
    assert selection.reason.startswith("HVP engine double-backward-rewritten (skipped double-backward: ")
    reference = FiniteDifferenceEngine(model, weights, batches, F.cross_entropy).hvp(probes)
    assert relative_error(selection.product, reference) < 1e-7
    # The engine stays prepared: further probes reuse the graph and agree with a fresh engine.
    other = probes_for(weights, seed=9)
    assert (
        relative_error(
            selection.engine.hvp(other),
            make_engine("double-backward-rewritten", model, weights, batches, F.cross_entropy).hvp(other),
        )
        == 0.0
    )


def test_hardsigmoid_without_rewrites_falls_back_to_finite_difference() -> None:
    """Forward-over-reverse does not help here: hardsigmoid_backward has no forward-mode derivative."""
    model, batches = mobilenetv3_like(), conv_batches()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    selection = select_engine(
        model,
        weights,
        batches,
        F.cross_entropy,
        probes,
        order=("double-backward", "forward-over-reverse", "finite-difference"),
    )
    assert selection.name == "finite-difference"
    assert set(selection.skipped) == {"double-backward", "forward-over-reverse"}
    assert "forward AD" in selection.skipped["forward-over-reverse"]
    assert selection.step_check is not None and selection.step_check < 1e-6
    assert selection.reason.endswith("(ok)")
    rewritten = make_engine("double-backward-rewritten", model, weights, batches, F.cross_entropy).hvp(probes)
    assert relative_error(selection.product, rewritten) < 1e-7


def test_rewrite_is_the_same_function() -> None:
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    with TwiceDifferentiableRewrites():
        rewritten = F.hardsigmoid(x)
        module = nn.Hardsigmoid(inplace=True)(x.clone())
    assert torch.allclose(rewritten, F.hardsigmoid(x), rtol=0, atol=1e-15)
    assert torch.allclose(module, F.hardsigmoid(x), rtol=0, atol=1e-15)


class _Cube(torch.autograd.Function):
    """x³ with a first-order-only backward and no torch.func support (a typical custom kernel)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class _CubeNet(nn.Module):
    def __init__(self, custom: bool) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.fc1, self.fc2, self.custom = nn.Linear(6, 5), nn.Linear(5, 3), custom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x) * 0.5
        return self.fc2(_Cube.apply(h) if self.custom else h**3)


def test_once_differentiable_custom_function_falls_back_to_finite_difference() -> None:
    model, batches = _CubeNet(custom=True).double().eval(), mlp_batches()
    weights = hessian_weights(model)
    probes = probes_for(weights)
    selection = select_engine(model, weights, batches, F.cross_entropy, probes)
    assert selection.name == "finite-difference"
    assert set(selection.skipped) == {"double-backward", "double-backward-rewritten", "forward-over-reverse"}
    assert "once_differentiable" in selection.skipped["double-backward"]
    assert "torch::autograd::Error" in selection.skipped["double-backward"]
    plain = _CubeNet(custom=False).double().eval()
    expected = dense_hvp(plain, hessian_weights(plain), batches, probes)
    assert relative_error(selection.product, expected) < 100 * FD_PREDICTED[torch.float64]


def test_graphless_gradient_is_refused_not_zeroed() -> None:
    """A backward computed outside autograd must not silently drop its second-order terms."""

    class Direct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _Cube.apply(self.fc(x))

    model = Direct().double().eval()
    batches = [(torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))]
    weights = [model.fc.weight]
    probes = [torch.ones_like(model.fc.weight)]
    engine = DoubleBackwardEngine(model, weights, batches, lambda out, y: out.sum())
    with pytest.raises(RuntimeError, match="double backward not supported") as raised:
        engine.hvp(probes)
    assert is_unsupported_derivative(raised.value)


def test_step_check_flags_a_kink_crossing() -> None:
    """A ReLU pre-activation exactly on its kink: the central difference sees the gradient jump
    (≈ J / 2h, growing as h shrinks) that double backward (relu'(0) = 0) ignores; the step check
    exposes it."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0
        model[0].bias[0] = 0.0
    x = torch.randn(5, 3, dtype=torch.float64)
    x[0] = torch.tensor([1.0, 0.0, 0.0])  # unit 0's pre-activation for sample 0 is exactly 0
    batches = [(x, torch.tensor([0, 1, 0, 1, 1]))]
    weights = hessian_weights(model)
    probes = probes_for(weights)
    exact = dense_hvp(model, weights, batches, probes)
    assert (
        relative_error(make_engine("double-backward", model, weights, batches, F.cross_entropy).hvp(probes), exact)
        < EXACT_TOLERANCE
    )
    selection = select_engine(model, weights, batches, F.cross_entropy, probes, order=("finite-difference",))
    assert relative_error(selection.product, exact) > 1.0
    assert selection.step_check is not None and selection.step_check > 0.5
    assert "UNRELIABLE" in selection.reason


# --------------------------------------------------------------------------------------------------
# Side effects, validation, error classification


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engines_leave_model_bit_identical(engine: str) -> None:
    model, batches = mobilenetv3_like(), conv_batches()
    model.float()  # exercise the float64 upcast of the finite-difference engine on a float32 model
    batches = [(x.float(), y) for x, y in batches]
    before = snapshot(model)
    weights = hessian_weights(model)
    runner = make_engine(engine, model, weights, batches, F.cross_entropy)
    try:
        runner.hvp(probes_for(weights))
    except (RuntimeError, NotImplementedError) as error:
        assert is_unsupported_derivative(error)
    runner.close()
    after = snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_training_mode_is_refused() -> None:
    model = tanh_mlp().train()
    with pytest.raises(ValueError, match="eval mode"):
        DoubleBackwardEngine(model, hessian_weights(model), mlp_batches(), F.cross_entropy)


def test_foreign_weight_is_refused() -> None:
    model = tanh_mlp()
    with pytest.raises(ValueError, match="not a parameter"):
        FiniteDifferenceEngine(model, [torch.zeros(3, 6, dtype=torch.float64)], mlp_batches(), F.cross_entropy)


def test_probe_shapes_are_checked() -> None:
    model = tanh_mlp()
    weights = hessian_weights(model)
    engine = DoubleBackwardEngine(model, weights, mlp_batches(), F.cross_entropy)
    with pytest.raises(ValueError, match="probe of shape"):
        engine.hvp([torch.zeros(2, 2, dtype=torch.float64)] * len(weights))


def test_error_classification() -> None:
    assert is_unsupported_derivative(RuntimeError("derivative for aten::hardsigmoid_backward is not implemented"))
    assert is_unsupported_derivative(
        NotImplementedError("Trying to use forward AD with aten::hardsigmoid_backward that does not support it")
    )
    assert not is_unsupported_derivative(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x6 and 5x3)"))
    assert not is_unsupported_derivative(ValueError("derivative for x is not implemented"))


def test_other_errors_propagate_from_selection() -> None:
    model = tanh_mlp()
    weights = hessian_weights(model)
    bad = [(torch.randn(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.long))]  # wrong width
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        select_engine(model, weights, bad, F.cross_entropy, probes_for(weights))


def test_selection_fails_when_no_engine_applies() -> None:
    model, batches = mobilenetv3_like(), conv_batches()
    weights = hessian_weights(model)
    with pytest.raises(StructureError, match="no Hessian-vector-product engine supports this model"):
        select_engine(
            model,
            weights,
            batches,
            F.cross_entropy,
            probes_for(weights),
            order=("double-backward", "forward-over-reverse"),
        )


def test_relative_error_helper_sanity() -> None:
    a = [torch.ones(3, dtype=torch.float64)]
    assert relative_error(a, a) == 0.0
    assert math.isclose(relative_error([2 * a[0]], a), 1.0)
