"""bf16 LoRA weights with fp32 master copies: the update matches fp32 adapters, where plain bf16 weights lose it."""

import pytest
import torch

from barbarossa.config import Train
from barbarossa.data import instructions, prompts
from barbarossa.engine import loading, runtime
from barbarossa.train import loop, master

CPU = runtime.Hardware("cpu", "cpu", 24.0, False)
LLAMA = {"name": "tiny-llama", "family": "llama", "source": "tiny:llama"}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attention"}
STEPS, LR = 6, 2e-4  # the gpu profile's learning rate: Adam moves each weight by about LR a step


def train_adapter(variant: str, examples, tokenizer) -> dict:
    """LoRA weights after STEPS steps in bf16: "fp32" adapters (autocast casts them), "master" or "naive" bf16."""
    decision = runtime.decide(
        CPU, Train(precision="bf16", adapter_dtype="fp32" if variant == "fp32" else "auto"), LLAMA
    )
    assert decision.master_weights == (variant != "fp32")
    _, model = loading.load_base(LLAMA, decision)
    torch.manual_seed(0)
    model = loop.lora_model(model, "llama", LORA)
    params = [p for p in model.parameters() if p.requires_grad]
    start = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def adamw(tensors):
        return torch.optim.AdamW(tensors, lr=LR, weight_decay=0.0)

    after_backward = None
    if variant == "master":
        optimizer = master.MasterWeights(params, torch.bfloat16, adamw)
        after_backward = optimizer.accumulate
    else:
        if variant == "naive":
            for p in params:
                p.data = p.data.to(torch.bfloat16)
        optimizer = adamw(params)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in range(STEPS):
        chunk = examples[step % 2 * 4 : step % 2 * 4 + 4]
        loop.accumulate_step(
            model, [chunk], 4, scaler, decision, "packed", 256, tokenizer.pad_token_id, "causal", after_backward
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if variant == "master":  # the fp32 weights the optimizer holds, laid out as the parameters
        offset, weights = 0, {}
        for name, p in ((n, p) for n, p in model.named_parameters() if p.requires_grad):
            weights[name] = optimizer.master.detach()[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
    else:
        weights = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {n: weights[n] - start[n] for n in start}  # the update


@pytest.fixture(scope="module")
def data(tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    records = instructions.load("bundled").records[:16]
    examples = [e for e in (prompts.build_example(tokenizer, r, 256) for r in records) if e][:8]
    return examples, tokenizer


def relative_error(update: dict, reference: dict) -> float:
    difference = sum(float((update[n] - reference[n]).norm() ** 2) for n in reference) ** 0.5
    return difference / sum(float(reference[n].norm() ** 2) for n in reference) ** 0.5


def test_bf16_lora_with_fp32_masters_updates_as_fp32_adapters_do_and_plain_bf16_does_not(data):
    examples, tokenizer = data
    fp32, with_master, naive = (train_adapter(v, examples, tokenizer) for v in ("fp32", "master", "naive"))
    # docs/gpu.md "GPU speed" states 0.1 %: autocast multiplies fp32 adapters by the same bf16-rounded weights,
    # so the updates agree (this CPU: bit for bit); the master only keeps what bf16 would round away
    assert relative_error(with_master, fp32) < 1e-3
    # plain bf16 weights round Adam's ~2e-4 steps to the bf16 grid (spacing 5e-4 to 1e-3 near LoRA A's 0.1–0.25)
    assert relative_error(naive, fp32) > 0.2
    lora_a = [n for n in fp32 if "lora_A" in n]
    assert relative_error({n: naive[n] for n in lora_a}, {n: fp32[n] for n in lora_a}) > 0.5


def test_gradients_of_every_backward_are_summed_in_fp32_and_the_weights_are_views_of_one_buffer():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 8).to(torch.bfloat16) for _ in range(3)]
    params = [p for layer in layers for p in layer.parameters()]
    start = [p.detach().float().clone() for p in params]
    optimizer = master.MasterWeights(params, torch.bfloat16, lambda ps: torch.optim.SGD(ps, lr=1.0))
    assert all(p.dtype == torch.bfloat16 and p.data_ptr() >= optimizer.flat.data_ptr() for p in params)
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    expected = torch.zeros_like(optimizer.master)
    for _ in range(2):  # two micro-batches: each backward's gradient lands in the views, then in the fp32 master
        out = x
        for layer in layers:
            out = layer(out)
        out.float().sum().backward()
        expected += torch.cat([p.grad.detach().reshape(-1).float() for p in params])
        optimizer.accumulate()
        assert all(float(p.grad.abs().max()) == 0 for p in params)  # zeroed in place, still the views
    assert torch.equal(optimizer.master.grad, expected)
    optimizer.step()
    stepped = torch.cat([s.reshape(-1) for s in start]) - expected  # SGD at lr 1 on the fp32 master: w - g
    assert torch.equal(optimizer.master.detach(), stepped)
    weights = torch.cat([p.detach().reshape(-1) for p in params])
    assert torch.equal(weights, stepped.to(torch.bfloat16))  # the parameters: the master, rounded once
    optimizer.zero_grad(set_to_none=True)
    assert float(optimizer.master.grad.abs().max()) == 0 and all(p.grad is not None for p in params)


def test_a_checkpoint_carries_the_fp32_master_so_a_resumed_run_is_exact():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16) * 0.1) for _ in range(2)]
    optimizer = master.MasterWeights(params, torch.bfloat16, lambda ps: torch.optim.AdamW(ps, lr=1e-4))
    for p in params:
        p.grad.add_(1.0)
    optimizer.accumulate()
    optimizer.step()
    state = optimizer.state_dict()
    assert state["master"].dtype == torch.float32
    # a fresh optimizer (new task) from the bf16 weights alone would differ below bf16's resolution; the state fixes it
    fresh_params = [torch.nn.Parameter(p.detach().float()) for p in params]
    fresh = master.MasterWeights(fresh_params, torch.bfloat16, lambda ps: torch.optim.AdamW(ps, lr=1e-4))
    assert not torch.equal(fresh.master, optimizer.master)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.master, optimizer.master)
    assert all(torch.equal(a, b) for a, b in zip(fresh_params, params))
    with pytest.raises(ValueError, match="without fp32 master weights"):
        fresh.load_state_dict(state["optimizer"])
