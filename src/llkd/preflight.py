"""Checks that need no model, run before any teacher or student loads: a typo in a selector
name or a bad test file should cost seconds, not a teacher run and a training run first.

Each check raises ConfigError, DataError or ModelNotFound with a one-line reason (the CLI
prints it and exits 2).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from llkd.config import ConfigError, LLKDConfig, SelectionConfig, StudentConfig, TeacherConfig, check_device
from llkd.models import TEACHERS, ModelNotFound

LOCAL_BACKENDS = ("hf", "llamacpp")  # backends that load weights here (and so use teacher.device)
PACKAGED_STUDENTS = ("minilm", "all-minilm-l6-v2", "mpnet", "all-mpnet-base-v2")


def check_device_available(device: str, what: str) -> None:
    """The device string is valid and, if it names an accelerator, this machine has it."""
    device = check_device(device)
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} '{device}': CUDA is not available on this machine (torch {torch.__version__}); use auto or cpu")
        index = device.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{what} '{device}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{what} 'mps': MPS is not available on this machine; use auto or cpu")


def check_teacher(cfg: TeacherConfig) -> None:
    """Backend, its prerequisites, prompt template, device and (for local files) the model path."""
    from llkd.teacher.prompt import PromptTemplate

    from llkd.teacher.labeling import check_backend_options

    check_backend_options(cfg)  # the backend exists, and reads every setting the user gave
    if cfg.template != "auto":
        PromptTemplate.load(cfg.template)  # raises ConfigError naming the problem
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ConfigError("the openai teacher backend needs teacher.base_url, e.g. http://localhost:8000/v1")
        return
    if cfg.backend == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
        from llkd.teacher.llamacpp import INSTALL_HINT

        raise ConfigError(INSTALL_HINT)
    if cfg.backend in LOCAL_BACKENDS:
        check_device_available(cfg.device, "teacher.device")
        if cfg.model not in TEACHERS:  # packaged names resolve (and may assemble weights) at load
            path = Path(cfg.model)
            if not (path.is_file() and path.suffix == ".gguf") and not (cfg.backend == "hf" and (path / "config.json").is_file()):
                kinds = ".gguf file" if cfg.backend == "llamacpp" else ".gguf file or an HF folder with config.json"
                raise ModelNotFound(f"teacher '{cfg.model}' is neither a packaged name ({', '.join(TEACHERS)}) nor a {kinds}")


def check_selection(cfg: SelectionConfig) -> None:
    from llkd.selection import SELECTORS

    if cfg.selector not in SELECTORS:
        raise ConfigError(f"unknown selector '{cfg.selector}'; choose one of: {', '.join(SELECTORS.names())}")


def check_student(cfg: StudentConfig) -> None:
    check_device_available(cfg.device, "student.device")
    if cfg.model not in PACKAGED_STUDENTS and not (Path(cfg.model) / "config.json").is_file():
        raise ModelNotFound(f"student model '{cfg.model}' is neither a packaged short name (minilm, mpnet) nor a folder with config.json")
    if cfg.output.exists() and not cfg.output.is_dir():
        raise ConfigError(f"student.output '{cfg.output}' is a file, not a folder")


def check_run(cfg: LLKDConfig) -> None:
    """Everything about a `train` run that can be checked without a model (data files are
    loaded by the caller, which keeps them)."""
    check_selection(cfg.selection)
    check_teacher(cfg.teacher)
    check_student(cfg.student)


def trained_student(folder: Path) -> Path:
    """``folder`` if it holds a student that llkd trained (``llkd.json`` next to the model);
    any other folder (a base encoder, a random-head HF model) would predict nonsense
    confidently, so it is refused."""
    from llkd.student.model import METADATA

    folder = Path(folder)
    if not folder.exists():
        raise ModelNotFound(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ModelNotFound(f"{folder}: a file; --model takes the trained student's folder")
    if not (folder / METADATA).is_file():
        hint = f"; did you mean {folder / 'model'}?" if (folder / "model" / METADATA).is_file() else "; `llkd train` saves one to <student.output>/model"
        raise ModelNotFound(f"{folder}: not a student trained by llkd (no {METADATA}){hint}")
    try:
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelNotFound(f"{folder / METADATA}: unreadable ({e})") from e
    if not isinstance(meta, dict) or "schema" not in meta:
        raise ModelNotFound(f"{folder / METADATA}: has no label schema; not written by llkd")
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{folder}: incomplete student folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        what = f"only pickled weights ({', '.join(pickled[:2])}), which llkd never loads" if pickled else "no model weights"
        raise ModelNotFound(f"{folder}: {what}; llkd saves a student as model.safetensors (retrain it, or convert the weights)")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelNotFound(f"{folder / 'config.json'}: unreadable ({e})") from e
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING:  # only custom code could build it, and llkd runs none
        raise ModelNotFound(f"{folder}: model_type '{model_type}' is not a transformers architecture; it would need the folder's own code "
                            "(trust_remote_code), which llkd does not run")
    return folder
