"""The optimizer and its schedule (training/optimizer.py)."""

import pytest
import torch

from swirl_lightning.training.config import OptimizerConfig
from swirl_lightning.training.optimizer import build_optimizer


def parameters(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((7, 5), (5,), (3, 3))]


def test_adamw_on_a_cpu_is_the_fused_kernel_and_takes_the_same_steps_as_the_default():
    fused, default = parameters(0), parameters(0)
    config = OptimizerConfig(lr=1e-2, weight_decay=0.1)
    optimizer = build_optimizer(config, fused, total_steps=3)["optimizer"]
    assert optimizer.defaults["fused"] is True
    reference = torch.optim.AdamW(default, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(fused, default):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        optimizer.step()
        reference.step()
    for a, b in zip(fused, default):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[0], parameters(0)[0])  # the weights moved


@pytest.mark.parametrize(("schedule", "expected"), [("constant", [0.5, 1.0, 1.0, 1.0]),
                                                     ("linear", [0.5, 1.0, 1.0, 0.5]),
                                                     ("cosine", [0.5, 1.0, 1.0, 0.5])])
def test_the_rate_warms_up_linearly_then_decays_to_zero_at_the_last_step(schedule, expected):
    built = build_optimizer(OptimizerConfig(lr=2.0, warmup_steps=2, schedule=schedule), parameters(0), total_steps=4)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"] / 2.0)
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([*expected, 1.0 if schedule == "constant" else 0.0])
