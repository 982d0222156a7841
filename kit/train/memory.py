"""How much GPU memory a training job needs on each of its GPUs: an estimate meant to refuse
what cannot fit before a container starts, like the serving fit check, not a profiler.

Per GPU (data parallel: every GPU holds a whole replica and its share of the batch):

- weights: parameters x the job's dtype;
- trainable state: LoRA's parameters in float32 with their gradients and Adam's two moments
  (16 bytes each); full fine-tuning: gradients in the dtype, Adam's moments in float32 and a
  float32 master copy when the dtype is 16-bit (16 bytes per parameter in all);
- DPO: chosen and rejected go through the model together (twice the rows), and a full
  fine-tune keeps a frozen reference copy of the weights (LoRA uses the base, adapter off);
- activations for the per-GPU batch and ``max_length`` without activation checkpointing
  (Korthikanti et al. 2022: s*b*h*(34 + 5*a*s/h) bytes per layer at 16 bit), plus the float32
  logits and their gradient (2 x b x s x vocab x 4 bytes);
- a runtime allowance (CUDA context, allocator fragmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.train.model_check import Architecture

GIB = 1024**3
RUNTIME_GIB = 1.0
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class TrainMemory:
    weights_gib: float
    state_gib: float
    activations_gib: float
    runtime_gib: float
    budget_gib: float
    trainable_params: int

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.state_gib + self.activations_gib + self.runtime_gib

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.budget_gib

    def describe(self) -> str:
        return (
            f"about {self.needed_gib:.1f} GiB per GPU (weights {self.weights_gib:.1f} + "
            f"trainable state {self.state_gib:.1f} for {self.trainable_params:,} parameters + "
            f"activations {self.activations_gib:.1f} + runtime {self.runtime_gib:.1f}) against "
            f"{self.budget_gib:.1f} GiB"
        )


def estimate(
    arch: Architecture,
    *,
    method: str,
    full: bool,
    lora_r: int,
    target_modules: tuple[str, ...],
    dtype: str,
    batch_size: int,
    max_length: int,
    gpu_memory_gib: float,
) -> TrainMemory:
    b = DTYPE_BYTES[dtype]
    weights = arch.params * b
    if full:
        trainable = arch.params
        state = trainable * (b + 8 + (4 if b < 4 else 0))
        if method == "dpo":
            weights *= 2  # the frozen reference model
    else:
        trainable = arch.lora_params(target_modules, lora_r)
        state = trainable * 16
    rows = batch_size * (2 if method == "dpo" else 1)
    s, h, a = max_length, arch.hidden_size, max(1, arch.num_heads)
    per_layer = s * rows * h * (34 + 5 * a * s / max(1, h)) * (b / 2)
    logits = 2 * rows * s * arch.vocab_size * 4
    activations = arch.num_layers * per_layer + logits
    return TrainMemory(
        weights_gib=weights / GIB,
        state_gib=state / GIB,
        activations_gib=activations / GIB,
        runtime_gib=RUNTIME_GIB,
        budget_gib=gpu_memory_gib,
        trainable_params=trainable,
    )
