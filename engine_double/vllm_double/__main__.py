#!/usr/bin/env python3
"""The `vllm` command of the kit engine double (NOT vLLM): `vllm serve ...`, `vllm --version`.

Runs as `python -m vllm_double`, as `python engine_double/vllm_double` (the package folder) and as
the image's /usr/local/bin/vllm, a link to this file.
"""

import os
import sys

if not __package__:  # run as a path, not with -m: import the package from its parent folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

from vllm_double.cli import main

if __name__ == "__main__":
    sys.exit(main())
