"""``llkd serve-teacher``: share one local teacher model over an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import logging

HELP = "Serve a local teacher model over an OpenAI-compatible API (for the openai backend on other machines)."

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="Packaged short name, HF folder or GGUF file (needs a chat template).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 serves other machines (there is no authentication).")
    parser.add_argument("--port", type=int, default=8000, help="TCP port.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="Weights dtype.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine).")
    parser.add_argument("--max-tokens-limit", type=int, default=256, help="Largest max_tokens a request may ask for.")


def run(args: argparse.Namespace) -> int:
    from llkd.serve import ChatModel, TeacherHTTPServer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chat = ChatModel(args.model, dtype=args.dtype, device=args.device, max_tokens_limit=args.max_tokens_limit)
    server = TeacherHTTPServer(chat, args.host, args.port)
    # The exact line tests and scripts wait for; the port is the bound one (useful with --port 0).
    log.info("serving %s on %s (device %s)", chat.name, server.url, chat.device)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
    return 0
