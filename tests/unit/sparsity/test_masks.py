"""`MaskStore`: masks as parametrizations that stay hard through training, baking and (re)loading.

Every assertion is exact (``torch.equal`` or ``== 0``): a masked entry is either exactly zero or a bug.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.errors import RunDirError, UsageError
from secateurs.sparsity.masks import (
    MaskStore,
    baked_copy,
    independent_copy,
    load_plain_state_dict,
    plain_state_dict,
)

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd-momentum-wd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-wd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-wd": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
    "adam-amsgrad": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "rmsprop-centered-momentum": lambda params: torch.optim.RMSprop(
        params, lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-3
    ),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=1e-2, weight_decay=1e-3),
}


class Tiny(nn.Module):
    """Conv → linear → linear, with names ``conv``, ``a``, ``b`` (``a.weight`` is canonical)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, kernel_size=3, padding=1)
        self.a = nn.Linear(3 * 4 * 4, 6)
        self.b = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(torch.relu(self.conv(x)).flatten(1))))


def tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def random_masks(model: nn.Module, keep: float = 0.5, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(getattr(model, name.split(".")[0]).weight.shape, generator=generator) < keep
        for name in ("conv.weight", "a.weight", "b.weight")
    }


def batch(seed: int = 2, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=generator), torch.randint(0, 4, (n,), generator=generator)


# ------------------------------------------------------------------------------------ set / get / counts
def test_set_get_counts_and_sparsity() -> None:
    model = tiny()
    store = MaskStore(model)
    mask = torch.tensor([[True, False, True, False, False, False]]).repeat(4, 1)  # keep 8 of 24
    store.set_("b.weight", mask)
    assert store.names() == ["b.weight"]
    assert "b.weight" in store and "a.weight" not in store and len(store) == 1
    got = store.get("b.weight")
    assert got.dtype == torch.bool and torch.equal(got, mask)
    assert store.counts() == {"b.weight": (8, 24)}
    assert store.sparsity() == 1 - 8 / 24
    store.set_("a.weight", torch.ones(6, 48, dtype=torch.bool))
    assert store.counts() == {"b.weight": (8, 24), "a.weight": (288, 288)}
    assert store.sparsity() == 1 - (8 + 288) / (24 + 288)
    assert store.sparsity(["b.weight"]) == 1 - 8 / 24
    assert list(store.state_dict()) == ["b.weight", "a.weight"]
    assert isinstance(model.b.parametrizations.weight.original, nn.Parameter)


def test_set_zeroes_the_original_and_the_effective_weight() -> None:
    model = tiny()
    before = model.a.weight.detach().clone()
    mask = random_masks(model)["a.weight"]
    store = MaskStore(model)
    store.set_("a.weight", mask)
    original = store.original("a.weight")
    assert original is model.a.parametrizations.weight.original
    assert int((original[~mask] != 0).sum()) == 0
    assert torch.equal(original[mask], before[mask])
    assert torch.equal(model.a.weight, before * mask)


def test_replacing_a_mask_keeps_one_parametrization() -> None:
    model = tiny()
    store = MaskStore(model)
    store.set_("b.weight", torch.ones(4, 6, dtype=torch.bool))
    narrower = torch.zeros(4, 6, dtype=torch.bool)
    narrower[:, 0] = True
    store.set_("b.weight", narrower)
    assert len(model.b.parametrizations.weight) == 1
    assert torch.equal(store.get("b.weight"), narrower)
    assert int((model.b.weight[:, 1:] != 0).sum()) == 0


def test_set_errors_name_the_parameter_and_shapes() -> None:
    store = MaskStore(tiny())
    with pytest.raises(UsageError, match=r"'b\.weight' has shape \(6, 4\), the parameter has \(4, 6\)"):
        store.set_("b.weight", torch.ones(6, 4, dtype=torch.bool))
    with pytest.raises(UsageError, match="no module 'c'"):
        store.set_("c.weight", torch.ones(1, dtype=torch.bool))
    with pytest.raises(UsageError, match=r"no mask on 'a.weight'; masked parameters: none"):
        store.get("a.weight")


# ------------------------------------------------------------------------------------------ optimizers
def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        x, y = batch(seed=100 + step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def assert_masked_state_zero(store: MaskStore, optimizer: torch.optim.Optimizer) -> int:
    """Assert every masked entry of every original and of its optimizer state is exactly 0; count tensors."""
    checked = 0
    for name, mask in store.items():
        original = store.original(name)
        assert int((original[~mask] != 0).sum()) == 0, name
        assert int((original[mask] != 0).sum()) > 0, name  # kept weights did train
        state = optimizer.state[original]
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == original.shape:
                assert int((value[~mask] != 0).sum()) == 0, f"{name} {key}"
                checked += 1
    return checked


EXPECTED_STATE = {
    "sgd-momentum-wd": 1,
    "sgd-nesterov-wd": 1,
    "adam-wd": 2,
    "adamw": 2,
    "adam-amsgrad": 3,
    "rmsprop-centered-momentum": 3,
    "adagrad": 1,
}


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("created", ["before-masks", "after-masks"])
def test_masked_weights_and_optimizer_state_stay_zero(optimizer_name: str, created: str) -> None:
    model = tiny()
    masks = random_masks(model)
    store = MaskStore(model)
    factory = OPTIMIZERS[optimizer_name]
    if created == "before-masks":
        optimizer = factory(list(model.parameters()))
        train_steps(model, optimizer, 3)  # non-zero state everywhere before the masks arrive
        store.update_(masks)
        store.bind_optimizer(optimizer)
    else:
        store.update_(masks)
        optimizer = factory(list(model.parameters()))
        store.bind_optimizer(optimizer)
    initial = {name: store.original(name).detach().clone() for name in masks}
    train_steps(model, optimizer, 20)
    checked = assert_masked_state_zero(store, optimizer)
    assert checked == 3 * EXPECTED_STATE[optimizer_name]
    for name, mask in masks.items():
        assert not torch.equal(store.original(name)[mask], initial[name][mask])  # it trained
        assert torch.equal(getattr(model, name.split(".")[0]).weight, store.original(name) * mask.float())


def test_masks_set_while_bound_zero_the_existing_state() -> None:
    model = tiny()
    store = MaskStore(model)
    store.set_("a.weight", torch.ones(6, 48, dtype=torch.bool))
    optimizer = OPTIMIZERS["sgd-momentum-wd"](list(model.parameters()))
    store.bind_optimizer(optimizer)
    train_steps(model, optimizer, 3)
    original = store.original("a.weight")
    assert int((optimizer.state[original]["momentum_buffer"] == 0).sum()) == 0
    new = random_masks(model)["a.weight"]
    store.set_("a.weight", new)
    assert int((optimizer.state[original]["momentum_buffer"][~new] != 0).sum()) == 0
    train_steps(model, optimizer, 5)
    assert int((original[~new] != 0).sum()) == 0
    assert int((optimizer.state[original]["momentum_buffer"][~new] != 0).sum()) == 0


def test_binding_twice_registers_one_hook_and_unbind_stops_enforcing() -> None:
    model = tiny()
    store = MaskStore(model)
    masks = random_masks(model)
    store.update_(masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    store.bind_optimizer(optimizer, enforce_each_step=True)
    store.bind_optimizer(optimizer, enforce_each_step=True)
    assert len(store._optimizers) == 1 and len(store._hooks) == 1
    with torch.no_grad():
        store.original("a.weight").fill_(1.0)
    optimizer.step()  # no gradients: SGD changes nothing, the hook re-zeroes the masked entries
    assert torch.equal(store.original("a.weight"), masks["a.weight"].float())
    store.unbind_optimizers()
    with torch.no_grad():
        store.original("a.weight").fill_(1.0)
    optimizer.step()
    assert int((store.original("a.weight") != 1.0).sum()) == 0


def test_default_binding_adds_no_per_step_work() -> None:
    model = tiny()
    store = MaskStore(model)
    store.update_(random_masks(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    store.bind_optimizer(optimizer)
    assert len(store._optimizers) == 1 and store._hooks == []


def test_enforce_after_a_manual_write() -> None:
    model = tiny()
    store = MaskStore(model)
    masks = random_masks(model)
    store.update_(masks)
    with torch.no_grad():
        for name in masks:
            store.original(name).fill_(3.0)
    assert int((store.original("a.weight") == 3.0).sum()) == masks["a.weight"].numel()
    store.enforce_()
    for name, mask in masks.items():
        original = store.original(name)
        assert torch.equal(original, 3.0 * mask.float())


def test_freeze_refuses_changes_but_accepts_the_same_mask() -> None:
    model = tiny()
    store = MaskStore(model)
    masks = random_masks(model)
    store.update_(masks)
    store.freeze()
    store.set_("a.weight", masks["a.weight"].clone())  # unchanged: allowed
    changed = masks["a.weight"].clone()
    changed[0, 0] = ~changed[0, 0]
    with pytest.raises(UsageError, match=r"masks are frozen; refusing to change the mask of 'a.weight'"):
        store.set_("a.weight", changed)
    assert torch.equal(store.get("a.weight"), masks["a.weight"])


# -------------------------------------------------------------------------------- bake, copy, forward
def test_masked_forward_equals_forward_with_multiplied_weights() -> None:
    model = tiny()
    reference = tiny()
    masks = random_masks(model)
    MaskStore(model).update_(masks)
    with torch.no_grad():
        for name, mask in masks.items():
            getattr(reference, name.split(".")[0]).weight.mul_(mask)
    x, _ = batch()
    assert torch.equal(model(x), reference(x))


def test_remove_bakes_masks_into_plain_parameters() -> None:
    model = tiny()
    masks = random_masks(model)
    store = MaskStore(model)
    store.update_(masks)
    x, _ = batch()
    expected = model(x).detach()
    effective = {name: getattr(model, name.split(".")[0]).weight.detach().clone() for name in masks}
    store.remove()
    assert len(store) == 0
    for module in model.modules():
        assert not parametrize.is_parametrized(module)
    for name, mask in masks.items():
        weight = getattr(model, name.split(".")[0]).weight
        assert isinstance(weight, nn.Parameter)
        assert torch.equal(weight, effective[name])
        assert int((weight[~mask] != 0).sum()) == 0
    assert torch.equal(model(x), expected)
    assert sorted(model.state_dict()) == sorted(plain_state_dict(tiny()))


def test_baked_copy_leaves_the_original_untouched() -> None:
    model = tiny()
    masks = random_masks(model)
    store = MaskStore(model)
    store.update_(masks)
    keys_before = sorted(model.state_dict())
    x, _ = batch()
    baked = baked_copy(model)
    assert sorted(model.state_dict()) == keys_before
    assert all(parametrize.is_parametrized(getattr(model, part)) for part in ("conv", "a", "b"))
    assert not any(parametrize.is_parametrized(module) for module in baked.modules())
    assert torch.equal(baked(x), model(x))
    with torch.no_grad():
        baked.a.weight.fill_(7.0)
    assert int((store.original("a.weight") == 7.0).sum()) == 0
    assert torch.equal(store.get("a.weight"), masks["a.weight"])


def test_removing_masks_from_an_independent_copy_keeps_the_original_parametrized() -> None:
    model = tiny()
    masks = random_masks(model)
    MaskStore(model).update_(masks)
    x, _ = batch()
    expected = model(x)
    clone = independent_copy(model)
    MaskStore.attached(clone).remove()  # deletes the `weight` property from the clone's class only
    assert torch.equal(model.a.weight, model.a.parametrizations.weight.original * masks["a.weight"])
    assert torch.equal(model(x), expected)
    assert torch.equal(clone(x), expected)


# ---------------------------------------------------------------------------------- state-dict layout
def test_plain_state_dict_uses_canonical_keys_and_effective_values() -> None:
    model = tiny()
    masks = random_masks(model)
    MaskStore(model).update_(masks)
    assert "a.parametrizations.weight.original" in model.state_dict()
    assert "a.parametrizations.weight.0.mask" in model.state_dict()
    plain = plain_state_dict(model)
    assert list(plain) == ["conv.bias", "conv.weight", "a.bias", "a.weight", "b.bias", "b.weight"]
    for name, mask in masks.items():
        assert torch.equal(plain[name], getattr(model, name.split(".")[0]).weight)
        assert int((plain[name][~mask] != 0).sum()) == 0


def test_load_plain_state_dict_round_trips_into_masked_and_unmasked_models() -> None:
    source = tiny(seed=0)
    masks = random_masks(source)
    MaskStore(source).update_(masks)
    state = plain_state_dict(source)
    x, _ = batch()
    expected = source(x)

    unmasked = tiny(seed=5)
    load_plain_state_dict(unmasked, state)
    assert torch.equal(unmasked(x), expected)
    assert all(torch.equal(unmasked.state_dict()[key], value) for key, value in state.items())

    masked = tiny(seed=6)
    store = MaskStore(masked)
    store.update_(masks)
    load_plain_state_dict(masked, state)
    assert torch.equal(masked(x), expected)
    assert all(torch.equal(plain_state_dict(masked)[key], value) for key, value in state.items())
    assert store.counts() == MaskStore.attached(source).counts()


def test_load_plain_state_dict_reports_shape_and_key_mismatches() -> None:
    model = tiny()
    MaskStore(model).update_(random_masks(model))
    state = plain_state_dict(tiny())
    state["a.weight"] = torch.zeros(6, 47)
    with pytest.raises(RunDirError, match=r"w\.safetensors does not match the model: a\.weight has shape \(6, 47\), "
                       r"the model expects \(6, 48\)"):  # fmt: skip
        load_plain_state_dict(model, state, "w.safetensors")
    state = plain_state_dict(tiny())
    del state["b.bias"]
    state["c.weight"] = torch.zeros(1)
    with pytest.raises(RunDirError, match=r"missing b.bias; unexpected c.weight"):
        load_plain_state_dict(model, state)


# ---------------------------------------------------------------------------------------- adoption
def test_attached_adopts_existing_masks() -> None:
    model = tiny()
    masks = random_masks(model)
    MaskStore(model).update_(masks)
    adopted = MaskStore.attached(model)
    assert sorted(adopted.names()) == sorted(masks)
    for name, mask in masks.items():
        assert torch.equal(adopted.get(name), mask)
    # the adopted store enforces the same parametrization objects
    with torch.no_grad():
        adopted.original("b.weight").fill_(1.0)
    adopted.enforce_()
    assert torch.equal(model.b.weight, masks["b.weight"].float())
    assert len(model.b.parametrizations.weight) == 1


def test_attached_with_masks_installs_them() -> None:
    model = tiny()
    masks = random_masks(model)
    store = MaskStore.attached(model, masks)
    assert store.counts() == {name: (int(mask.sum()), mask.numel()) for name, mask in masks.items()}
    assert int((store.original("conv.weight")[~masks["conv.weight"]] != 0).sum()) == 0


def test_mask_on_a_root_module_parameter() -> None:
    model = nn.Linear(3, 2)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    store = MaskStore(model)
    store.set_("weight", mask)
    assert MaskStore.attached(model).names() == ["weight"]
    assert list(plain_state_dict(model)) == ["bias", "weight"]
    assert int((model.weight[~mask] != 0).sum()) == 0


# ------------------------------------------------------------------------- gradient masking (the hook)
def _linear_with_mask() -> tuple[nn.Linear, MaskStore, torch.Tensor, torch.Tensor]:
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    keep = torch.tensor([[True, False, True], [False, True, True]])
    store = MaskStore(layer)
    store.set_("weight", keep)
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    return layer, store, keep, x


def test_gradient_is_masked_under_backward_grad_and_double_backward() -> None:
    layer, store, keep, x = _linear_with_mask()
    original = store.original("weight")
    # effective weight [[1, 0, 3], [0, 5, 6]]; loss = Σ y² with y = x Wᵀ
    # y = [[10, 28], [5, 14.5]]; dL/dW = 2 yᵀ x = [[2·(10·1 + 5·−1), …], …] (masked entries 0)
    y = x @ torch.tensor([[1.0, 0.0, 3.0], [0.0, 5.0, 6.0]]).T
    expected = (2 * y.T @ x) * keep
    (layer(x) ** 2).sum().backward()
    assert torch.equal(original.grad, expected)
    (grad,) = torch.autograd.grad((layer(x) ** 2).sum(), original)
    assert torch.equal(grad, expected)
    # Hessian-vector product with v = 1: H = 2 · (xᵀx ⊗ I) restricted to kept entries on both sides
    (grad,) = torch.autograd.grad((layer(x) ** 2).sum(), original, create_graph=True)
    (hvp,) = torch.autograd.grad(grad.sum(), original)
    gram = x.T @ x
    expected_hvp = (2 * (keep.float() @ gram)) * keep
    assert torch.allclose(hvp, expected_hvp)
    assert int((hvp[~keep] != 0).sum()) == 0


def test_gradient_hook_is_registered_once_and_follows_copies() -> None:
    layer, store, keep, x = _linear_with_mask()
    for _ in range(5):
        layer(x)
    assert len(store.original("weight")._backward_hooks or {}) == 1
    for clone in (copy.deepcopy(layer), independent_copy(layer)):
        clone_original = MaskStore.attached(clone).original("weight")
        assert clone_original is not store.original("weight")
        (clone(x) ** 2).sum().backward()
        assert clone_original.grad is not None
        assert int((clone_original.grad[~keep] != 0).sum()) == 0
        assert int((clone_original.grad[keep] == 0).sum()) == 0


def test_loading_dense_weights_into_a_masked_model_zeroes_the_masked_entries() -> None:
    dense = tiny(seed=3)
    masked = tiny(seed=4)
    masks = random_masks(masked)
    MaskStore(masked).update_(masks)
    load_plain_state_dict(masked, plain_state_dict(dense))
    store = MaskStore.attached(masked)
    for name, mask in masks.items():
        assert torch.equal(store.original(name), dense.get_parameter(name) * mask.float())
    x, _ = batch()
    with torch.no_grad():
        for name, mask in masks.items():
            dense.get_parameter(name).mul_(mask)
    assert torch.equal(masked(x), dense(x))
