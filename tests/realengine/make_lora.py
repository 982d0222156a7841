"""Write a small LoRA adapter (PEFT format) for SmolLM2-135M: rank 8 on q_proj and v_proj of
every layer, A random and B zero, so it loads like any adapter and leaves the outputs as the
base model's. Runs inside the real-engine image (torch + safetensors are there):

    python make_lora.py CONFIG_JSON OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

cfg = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rank = 8
hidden = cfg["hidden_size"]
head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
dims = {
    "q_proj": cfg["num_attention_heads"] * head_dim,
    "v_proj": cfg["num_key_value_heads"] * head_dim,
}
gen = torch.Generator().manual_seed(0)
tensors = {}
for layer in range(cfg["num_hidden_layers"]):
    for proj, out_dim in dims.items():
        key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * 0.01
        tensors[f"{key}.lora_B.weight"] = torch.zeros(out_dim, rank)
save_file(tensors, str(out / "adapter_model.safetensors"))
(out / "adapter_config.json").write_text(
    json.dumps(
        {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": rank,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "target_modules": sorted(dims),
            "bias": "none",
            "fan_in_fan_out": False,
            "modules_to_save": None,
            "use_rslora": False,
            "use_dora": False,
            "base_model_name_or_path": "smollm2-135m-instruct",
        },
        indent=2,
    )
)
print(f"wrote {out}")
