"""Chat completions over HTTP on 127.0.0.1: read a job, load model and adapters, serve until killed.

Inside the sandbox this package is imported as ``chat_engine`` (the bundle is on ``PYTHONPATH``); it only uses
relative imports so it also imports as ``cloister.engines.chat_inference.chat_engine`` for tests and benchmarks.
"""

import os
import warnings

# The engine reads plaintext and must never reach the network: keep the Hugging Face libraries offline, quiet and
# single-process whatever the environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TQDM_DISABLE"] = "1"
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers|peft")
