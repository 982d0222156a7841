"""Which files of a hub repository vLLM needs: configuration, tokenizer, one weight format,
and custom code only when the service trusts remote code.

Hub repositories often carry the same weights several times (safetensors, PyTorch ``.bin``,
ONNX, GGUF, Flax, an ``original/`` checkpoint): pulling all of them can double or triple a
600 GB download. vLLM loads safetensors when a repository has them and falls back to ``.bin``
otherwise, so the kit takes exactly one of the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import PurePosixPath

#: configuration and tokenizer files vLLM (and transformers under it) may read, at the top level
TOP_LEVEL = (
    "config.json",
    "generation_config.json",
    "params.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "tokenizer.model.v3",
    "tekken.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "quantize_config.json",
    "quant_config.json",
    "hf_quant_config.json",
    "adapter_config.json",
    # sentence-transformers layouts: vLLM's pooling models read the pooling and dense layers
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
TOP_LEVEL_PATTERNS = ("*.tiktoken",)
#: sentence-transformers module folders (``1_Pooling``, ``2_Dense``, ``3_Normalize``)
MODULE_PATTERNS = ("[0-9]_*/config.json", "[0-9]_*/*.safetensors", "[0-9]_*/*.json")
SAFETENSORS = ("*.safetensors", "model.safetensors.index.json", "*.safetensors.index.json")
PYTORCH = ("*.bin", "pytorch_model.bin.index.json", "*.bin.index.json")
CODE = ("*.py",)


@dataclass(frozen=True)
class Selection:
    wanted: tuple[str, ...]
    #: why the others are left out: reason -> paths
    skipped: dict[str, tuple[str, ...]]
    weight_format: str  # "safetensors" | "pytorch" | "none"

    def summary(self) -> str:
        parts = [f"{len(v)} {reason}" for reason, v in self.skipped.items() if v]
        return "; ".join(parts)


def select(paths: Iterable[str], *, remote_code: bool) -> Selection:
    """The files to pull out of a repository's file list."""
    files = sorted(set(paths))
    top = [p for p in files if "/" not in p]
    has_safetensors = any(_match(p, SAFETENSORS) for p in top if p.endswith(".safetensors"))
    has_bin = any(p.endswith(".bin") and _match(p, PYTORCH) for p in top)
    fmt = "safetensors" if has_safetensors else ("pytorch" if has_bin else "none")
    weights = SAFETENSORS if fmt == "safetensors" else PYTORCH if fmt == "pytorch" else ()
    wanted: list[str] = []
    skipped: dict[str, list[str]] = {
        "duplicate weight formats": [],
        "custom code (trust_remote_code is off)": [],
        "not read by vLLM": [],
    }
    # Mistral repositories carry consolidated*.safetensors beside the sharded Hugging Face
    # layout that the index names: the same weights twice
    indexed = "model.safetensors.index.json" in top
    for p in files:
        name = PurePosixPath(p).name
        if "/" not in p:
            if indexed and name.startswith("consolidated") and name.endswith(".safetensors"):
                skipped["duplicate weight formats"].append(p)
            elif p in TOP_LEVEL or _match(p, TOP_LEVEL_PATTERNS) or _match(p, weights):
                wanted.append(p)
            elif _match(p, CODE):
                (
                    wanted if remote_code else skipped["custom code (trust_remote_code is off)"]
                ).append(p)
            elif _is_weights(name):
                skipped["duplicate weight formats"].append(p)
            else:
                skipped["not read by vLLM"].append(p)
        elif _match(p, MODULE_PATTERNS) and p.count("/") == 1:
            wanted.append(p)
        elif _is_weights(name):
            skipped["duplicate weight formats"].append(p)
        else:
            skipped["not read by vLLM"].append(p)
    return Selection(tuple(wanted), {k: tuple(v) for k, v in skipped.items()}, fmt)


def _match(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(path, pat) for pat in patterns)


def _is_weights(name: str) -> bool:
    return name.endswith(
        (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".gguf", ".h5",
         ".msgpack", ".ot", ".ckpt", ".tflite", ".mlmodel", ".xml")
    )  # fmt: skip
