"""The optimizer factory: torch's AdamW as the reference for torchao's kernel,
bf16 moment state at half the memory reaching the fp32 loss, bf16 weights
with stochastic rounding, and one-line errors."""
from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from ssl_zoo.errors import UserError
from ssl_zoo.optim import cast_bf16_weights, make_optimizer, optimizer_state_bytes

CFG = {"lr": 1e-2, "betas": [0.9, 0.999]}


pytestmark = pytest.mark.usefixtures("one_thread")

def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))


def groups(model: nn.Module, wd: float = 0.05):
    return [{"params": list(model.parameters()), "weight_decay": wd}]


def digits():
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:512] / 16.0, dtype=torch.float32), torch.tensor(y[:512])


def train(optim_cfg: dict, steps: int = 100) -> tuple[float, torch.optim.Optimizer]:
    """Full-batch classification of 512 real digits with an MLP."""
    model, (x, y) = mlp(), digits()
    opt = make_optimizer(optim_cfg, groups(model))
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return nn.functional.cross_entropy(model(x), y).item(), opt


def test_torchao_kernel_with_fp32_state_equals_torch_adamw():
    from ssl_zoo.optim import low_precision_adamw

    ref_model, model = mlp(), mlp()
    ref = torch.optim.AdamW(groups(ref_model), lr=1e-2)
    ours = low_precision_adamw()(groups(model), lr=1e-2, state_dtype=torch.float32)
    x, y = digits()
    for _ in range(3):
        for m, o in ((ref_model, ref), (model, ours)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for p, q in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_bf16_state_halves_optimizer_memory_and_reaches_the_fp32_loss():
    fp32_loss, fp32 = train({**CFG, "name": "adamw"})
    bf16_loss, bf16 = train({**CFG, "name": "adamw_bf16"})
    assert {t.dtype for s in bf16.state.values() for k, t in s.items() if k != "step"} == {torch.bfloat16}
    ratio = optimizer_state_bytes(bf16) / optimizer_state_bytes(fp32)
    assert 0.49 < ratio < 0.51, ratio  # measured; the scalar step counters are the rest
    assert fp32_loss < 0.05  # the run did learn
    assert abs(bf16_loss - fp32_loss) < 0.01 + 0.1 * fp32_loss, (bf16_loss, fp32_loss)  # docs/performance.md


def test_state_dtype_key_is_the_same_as_the_name():
    _, a = train({**CFG, "name": "adamw", "state_dtype": "bf16"}, steps=1)
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in a.state.values())


def test_bf16_weights_use_stochastic_rounding():
    """Updates of 1e-4 on weights of 1.0 are below half a bf16 ulp (2**-8):
    round-to-nearest would never move them; stochastic rounding moves them by
    the right amount on average. Reference: the fp32 trajectory 1 - steps*lr."""
    w = nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    opt = make_optimizer({"name": "adamw", "lr": 1e-4, "bf16_weights": ["x"]}, [{"params": [w], "weight_decay": 0.0}])
    for _ in range(100):
        w.grad = torch.ones_like(w)  # constant gradient: Adam's step is exactly lr
        opt.step()
    assert w.dtype == torch.bfloat16
    assert abs(w.float().mean().item() - (1 - 100 * 1e-4)) < 1e-3
    assert (w != 1).any()


def test_cast_bf16_weights_on_a_submodule():
    model = nn.Sequential()
    model.add_module("image", nn.Linear(4, 4))
    model.add_module("text", nn.Linear(4, 4))
    cast_bf16_weights(model, ["text"])
    assert model.text.weight.dtype == torch.bfloat16 and model.image.weight.dtype == torch.float32
    with pytest.raises(UserError, match="available: image, text"):
        cast_bf16_weights(model, ["txt"])


@pytest.mark.parametrize("cfg,match", [
    ({"name": "lamb"}, "available: adamw, adamw_bf16, sgd"),
    ({"name": "adamw", "state_dtype": "fp8"}, "available: fp32, bf16"),
    ({"name": "sgd", "state_dtype": "bf16"}, "need an AdamW"),
])
def test_unknown_choices_are_user_errors(cfg, match):
    with pytest.raises(UserError, match=match):
        make_optimizer({"lr": 1e-3, **cfg}, groups(mlp()))
