"""gpt/ is a folder of scripts that import each other as top-level modules, like nanoGPT."""

import sys
from pathlib import Path

GPT_DIR = Path(__file__).resolve().parents[2] / "gpt"
if str(GPT_DIR) not in sys.path:
    sys.path.insert(0, str(GPT_DIR))
