"""kit: declarative vLLM stacks for multi-GPU hosts."""

__version__ = "0.1.0"
