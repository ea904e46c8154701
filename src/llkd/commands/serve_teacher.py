"""``llkd serve-teacher``: share one local teacher model over an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import logging
import os

from llkd.config import ConfigError, check_device

HELP = "Serve a local teacher model over an OpenAI-compatible API (for the openai backend on other machines)."

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from llkd.serve import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES

    parser.add_argument("--model", default="smollm2-135m", help="Packaged short name, HF folder or GGUF file (needs a chat template).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 serves other machines (set --api-key-env then).")
    parser.add_argument("--port", type=int, default=8000, help="TCP port.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="Weights dtype.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine).")
    parser.add_argument("--max-tokens-limit", type=int, default=256, help="Largest max_tokens a request may ask for.")
    parser.add_argument("--api-key-env", metavar="VAR", default=None,
                        help="Environment variable holding an API key; requests must then send 'Authorization: Bearer <key>' (clients: teacher.api_key_env).")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="Largest request body accepted (larger: 413, before reading it).")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                        help="Close a connection that sends nothing for this long (idle keep-alive, a request stopped half-way); a body must arrive within it.")


def run(args: argparse.Namespace) -> int:
    from llkd.serve import ChatModel, TeacherHTTPServer, bind_warning

    # Everything that can be wrong is checked before the model loads (which takes a while).
    device = check_device(args.device)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if args.max_body_bytes < 1:
        raise ConfigError("--max-body-bytes must be at least 1")
    if not args.idle_timeout > 0:
        raise ConfigError(f"--idle-timeout must be positive, not {args.idle_timeout:g}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chat = ChatModel(args.model, dtype=args.dtype, device=device, max_tokens_limit=args.max_tokens_limit)
    server = TeacherHTTPServer(chat, args.host, args.port, api_key=api_key, max_body_bytes=args.max_body_bytes, idle_timeout=args.idle_timeout)
    warning = bind_warning(args.host, api_key is not None)
    if warning:
        log.warning(warning)
    # The exact line tests and scripts wait for; the port is the bound one (useful with --port 0).
    log.info("serving %s on %s (device %s)", chat.name, server.url, chat.device)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
    return 0
