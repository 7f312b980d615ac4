"""LoRA weights in the compute dtype (bf16), fp32 master copies in the optimizer.

Why: with fp32 LoRA weights beside a bf16 base, every adapted projection casts
its input to fp32 and its weights back to bf16 in every forward and backward —
about 1000 copy kernels a step for a 1.1B model (H200 profile, docs/gpu.md "GPU
speed"). Here the trainable weights are bf16 views into one flat buffer; the
optimizer steps one flat fp32 master copy; per optimizer step that is one cast
of the gradients in (per micro-batch, accumulated in fp32) and one cast of the
weights out, whatever the number of adapted layers.

Exactness: under bf16 autocast the fp32-adapter path multiplies by the same
bf16-rounded weights, so forward and gradients agree; the update itself is
applied to the fp32 master, so steps smaller than bf16's resolution are not
lost (tests/train/test_master.py compares both paths and a naive bf16 one).
"""

from __future__ import annotations


class MasterWeights:
    """An optimizer over the fp32 master of `params` (16-bit tensors, made views into one flat buffer).

    Usable where the trainer uses a torch optimizer: `param_groups` (learning
    rate), `step`, `zero_grad`, `state_dict` / `load_state_dict` (checkpoints
    carry the master, so a resumed run continues from the exact weights).
    Call `accumulate()` after every backward.
    """

    def __init__(self, params: list, dtype, make_optimizer):
        import torch

        self.params = list(params)
        sizes = [p.numel() for p in self.params]
        # the master from the weights as initialised (fp32 before the cast): the exact start
        self.master = torch.nn.Parameter(torch.cat([p.detach().reshape(-1).float() for p in self.params]))
        self.master.grad = torch.zeros_like(self.master)
        self.flat = self.master.detach().to(dtype)
        self.flat_grad = torch.zeros_like(self.flat)
        offset = 0
        for p, size in zip(self.params, sizes):
            p.data = self.flat[offset : offset + size].view_as(p)
            p.grad = self.flat_grad[offset : offset + size].view_as(p)  # autograd accumulates into it in place
            offset += size
        self.optimizer = make_optimizer([self.master])

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def trained(self) -> list:
        """What gradient clipping and the step read: the fp32 master."""
        return [self.master]

    def accumulate(self) -> None:
        """Move the 16-bit gradients of the last backward into the fp32 master gradient (two kernels)."""
        self.master.grad.add_(self.flat_grad)
        self.flat_grad.zero_()

    def step(self) -> None:
        self.optimizer.step()
        self.flat.copy_(self.master.detach())

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero both gradients in place (the 16-bit ones are views the parameters hold: never set to None)."""
        self.master.grad.zero_()
        self.flat_grad.zero_()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "master": self.master.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        import torch

        if "master" not in state:
            raise ValueError(
                "checkpoint was written without fp32 master weights (adapter_dtype fp32): "
                'resume it with adapter_dtype = "fp32"'
            )
        with torch.no_grad():
            self.master.copy_(state["master"].to(self.master.device))
            self.flat.copy_(self.master)
        self.optimizer.load_state_dict(state["optimizer"])
