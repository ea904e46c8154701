"""One validated configuration for a whole llkd run.

YAML files map onto :class:`LLKDConfig` section by section; CLI flags are generated from the
same fields (``--<section>-<field>``), so ``llkd train --help`` documents every option and a
flag always overrides the file.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used, with the reason."""


def cache_dir() -> Path:
    """Where llkd keeps converted models and teacher answers (never inside the repo)."""
    root = os.environ.get("LLKD_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llkd"


# Default epochs per student mode: a frozen head costs microseconds a step, so it can afford
# many passes; a fine-tuned encoder on 2 CPU cores cannot.
FINETUNE_EPOCHS = 3.0
FROZEN_EPOCHS = 20.0
# Head learning rates chosen on the benchmark's dev splits (pool side, never test).
FINETUNE_HEAD_LR = 1e-1
FROZEN_HEAD_LR = 1e-2


DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: str) -> str:
    """A device string llkd accepts (checked up front: torch would reject a typo only once a
    model is loading, or an 'auto' fallback would hide it)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device.strip()):
        raise ConfigError(f"device must be one of {DEVICE_HELP}, not '{device}'")
    return device.strip()


def _device_field(v: Any) -> Any:
    try:
        return check_device(v)
    except ConfigError as e:
        raise ValueError(str(e)) from None  # pydantic reports it with the field's name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    pool: Path | None = Field(None, description="Unlabeled texts the teacher labels and the student trains on (CSV, TSV, JSONL or Parquet).")
    test: Path | None = Field(None, description="Labelled texts for evaluation (gold labels are never used for training).")
    dev: Path | None = Field(None, description="Optional labelled texts evaluated after each epoch.")
    labels: Path | None = Field(None, description="Label schema YAML: names, optional descriptions and verbalizers.")
    text_column: str = Field("text", description="Column holding the text.")
    id_column: str | None = Field(None, description="Column holding a unique id (default: the file's own id column if it has one, else the row number).")
    label_column: str | None = Field("label", description="Column holding the gold label in test/dev files.")
    task: Literal["classification", "entities"] = Field("classification", description="classification: one label per text (the files above); entities: named-entity spans, with labels the entity schema YAML (an 'entities:' list) and pool/test/dev CoNLL/IOB (.conll, .tsv, .iob, .bio, .txt) or JSONL files (llkd.entity_pipeline).")


class TeacherConfig(_Section):
    backend: str = Field("hf", description="Teacher backend: hf (transformers, HF folder or GGUF), llamacpp, openai.")
    model: str = Field("smollm2-135m", description="Packaged short name (smollm2-135m, gemma3-270m, qwen2.5-1.5b), HF folder, GGUF file, or a server's model name.")
    template: str = Field("auto", description="Prompt template: auto, chat, completion, or a path to a YAML template file.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype for local backends; auto = bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16/AMX), else float32.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps.")
    batch_size: int = Field(16, ge=1, description="Texts scored per forward pass.")
    calibration: Literal["auto", "balanced", "contextual", "em", "mean", "none", "prior"] = Field("auto", description="Teacher calibration (llkd.teacher.calibration), fitted on the unlabeled pool and applied with that reference to every split. auto (default): with a labelled dev split (data.dev), whichever of mean / prior (from votes or from the dev confusion) / none / balanced gives the teacher the best dev macro-F1; without one, mean. prior: column scaling toward the pool's estimated class prior (from the dev split's confusion when given, else from the teacher's debiased votes); balanced: the same toward a uniform prior (assumes balanced classes); mean: divide by the pool's mean answer; contextual: divide by the answer on 'N/A'; em: Saerens EM from a uniform prior (reference only); none: raw. Measured in docs/results.md.")
    base_url: str | None = Field(None, description="openai backend: server URL, e.g. http://localhost:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai backend: environment variable that holds the key (never logged).")
    confidence: Literal["auto", "logprobs", "vote"] = Field("auto", description="openai backend: first-token logprobs, or self-consistency vote share.")
    votes: int = Field(5, ge=1, description="openai backend: samples per text for vote confidence.")
    concurrency: int = Field(4, ge=1, description="openai backend: requests in flight.")
    timeout: float = Field(60.0, gt=0, description="openai backend: seconds per request.")
    max_retries: int = Field(6, ge=0, description="openai backend: retries on 429/5xx/timeouts, with exponential back-off and jitter.")
    cache: Path | None = Field(None, description="Teacher answer cache (SQLite). Default: <cache dir>/teacher.sqlite.")
    tokenizer: str | None = Field(None, description="openai backend: the server's tokenizer, to count tokens for the dry-run estimate and for responses without usage: a packaged model short name, an HF tokenizer folder or a GGUF file (default: the model's own when teacher.model is a packaged name, else a rough ~4 characters per token).")
    price_prompt: float | None = Field(None, description="USD per 1M prompt tokens, for the cost of teacher calls (default: no cost shown; a local model is free).")
    price_completion: float | None = Field(None, description="USD per 1M completion tokens (default: no cost shown; 0 when only price_prompt is given).")

    _device = field_validator("device")(_device_field)

    @field_validator("price_prompt", "price_completion")
    @classmethod
    def _price(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v < float("inf"):  # NaN fails it too
            raise ValueError(f"a price is USD per 1M tokens, a finite number >= 0, not {v}")
        return v

    def cache_path(self) -> Path:
        return self.cache or cache_dir() / "teacher.sqlite"


class SelectionConfig(_Section):
    selector: str = Field("llkd", description="Sample selector: llkd, llkd-paper (the paper's rule, exactly), all, soft, random, fixed, teacher_adaptive, student_adaptive, freematch.", json_schema_extra={"flag": "--selector"})
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="EMA momentum lambda of the adaptive thresholds.")
    init: Literal["first_batch", "constant"] = Field("first_batch", description="Threshold initialisation: statistics of the first batch, or init_value.")
    init_value: float = Field(0.5, ge=0.0, le=1.0, description="Initial global and class levels when init=constant.")
    weighted: bool = Field(True, description="Weight the loss by teacher confidence x student uncertainty.")
    soft_targets: bool = Field(False, description="Train the selected samples towards the teacher's full distribution (soft cross-entropy) instead of its hard label; the soft selector always does.")
    student_signal: Literal["entropy", "label_uncertainty"] = Field("entropy", description="LLKD student side: entropy of the student's distribution (paper), or its uncertainty about the teacher's label, 1 - p_student(pseudo-label), which stays high where a confident student disagrees with the teacher.")
    student_threshold: Literal["ema", "batch"] = Field("batch", description="LLKD student threshold: batch (default: class-wise levels of the current batch, no lag; the best LLKD variant on the frozen tier's dev splits, docs/results.md) or ema (the paper's; lags behind a falling uncertainty and starves a learning student).")
    teacher_threshold: Literal["class", "global"] = Field("class", description="LLKD teacher threshold: class (paper: tau(y) = g * m(y) / max m, so a class whose answers are less confident gets a lower bar) or global (every class at the global EMA level g: a class the teacher answers with low confidence, typically one it over-predicts, keeps fewer rows; class balance is then left to class_balance). global was not made the default: it starves classes a weak teacher answers less confidently (docs/results.md, fifth pass).")
    class_balance: Literal["none", "selected_share"] = Field("selected_share", description="LLKD class-balance guard: selected_share (default) reweights each selected sample by target(y) / (EMA share of its pseudo-label class among selected samples), so one over-predicted class cannot dominate the gradient; none = the paper's weights.")
    class_balance_target: Literal["prior", "uniform"] = Field("prior", description="What the class-balance guard aims the selected set's class mix at: prior (default: the class shares the teacher's calibration estimated for the pool, so a skewed pool stays skewed) or uniform (1/C each, which pushes the student toward rare classes).")
    min_per_step: int = Field(0, ge=0, description="LLKD floor: if fewer samples pass both thresholds, add the best-scoring (confidence x uncertainty) others up to this many per step.")
    fixed_threshold: float = Field(0.7, ge=0.0, le=1.0, description="fixed selector: global teacher-confidence threshold.")
    keep_rate: float = Field(0.25, gt=0.0, le=1.0, description="random selector: share of the pool kept (set to LLKD's data usage).")


class StudentConfig(_Section):
    model: str = Field("minilm", description="Student encoder: packaged short name (minilm, mpnet) or HF folder.", json_schema_extra={"flag": "--student"})
    mode: Literal["finetune", "frozen"] = Field("finetune", description="finetune: train encoder and head; frozen: encode the texts once (embeddings cached on disk) and train only the head, in seconds.")
    max_length: int = Field(128, ge=8, description="Tokens per text.")
    batch_size: int = Field(16, ge=1, description="Pool samples per step (selection happens inside each batch).")
    candidate_factor: int = Field(1, ge=1, description="Online batch selection (our extension, docs/method.md 5a): score k x batch_size candidate texts in one no-grad forward, run the selector over them in chunks of batch_size (thresholds and weights per chunk, as per batch), and train on full batches of batch_size selected rows, so a low selection rate gives fewer, full backward passes instead of many small ones. A step is then one such gradient batch; the learning-rate schedule still counts batches of candidates, so the run ends after the same passes over the pool. 1 (default): select and train inside each batch. One process only; refused with llkd-paper.")
    epochs: float | None = Field(None, gt=0, description="Passes over the pool (default: 3 when fine-tuning, 20 in frozen mode).")
    lr: float = Field(1e-4, gt=0, description="AdamW peak learning rate of the encoder.")
    head_lr: float | None = Field(None, gt=0, description="AdamW peak learning rate of the new classification head (it starts from random weights, so it needs a larger step than the pretrained encoder); default 0.1 when fine-tuning, 0.01 in frozen mode (chosen on dev splits, docs/results.md).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Compute dtype (autocast; weights stay fp32): auto = bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16/AMX), else float32.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Share of steps with linear warm-up; linear decay after.")
    seed: int = Field(42, description="Seed for data order, head init, dropout and selectors.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice).")
    output: Path = Field(Path("runs/student"), description="Where the trained student (HF folder), logs and checkpoints go.")
    checkpoint_every: int = Field(0, ge=0, description="Also checkpoint every N steps (0: only at epoch ends).")
    keep_best: bool = Field(True, description="With a dev split (data.dev): save the epoch with the best dev macro-F1, not the last (the Hugging Face Trainer's load_best_model_at_end); summary.json says which epoch was kept and why.")
    patience: int = Field(0, ge=0, description="With a dev split: stop after this many epochs without a better dev macro-F1 (0: run every epoch). One process only.")
    resume: bool = Field(True, description="Resume from the checkpoint in output if there is one.")

    _device = field_validator("device")(_device_field)

    def resolved_head_lr(self) -> float:
        return self.head_lr if self.head_lr is not None else (FROZEN_HEAD_LR if self.mode == "frozen" else FINETUNE_HEAD_LR)

    def resolved_epochs(self) -> float:
        return self.epochs if self.epochs is not None else (FROZEN_EPOCHS if self.mode == "frozen" else FINETUNE_EPOCHS)


class DistillConfig(_Section):
    """Budgeted distillation (``llkd distill``): ask the teacher only about the texts the
    student needs, round by round, up to a budget."""

    budget: str = Field("20%", description="Teacher calls allowed: a count of pool texts (500) or a share of the pool (20%). Every text asked counts, answered or failed; answers already in the cache from an earlier run of the same job count too, so a resumed job asks no new text beyond it (a failed text is retried on a rerun, and its calls are counted in the token and money budgets).")
    budget_tokens: int | None = Field(None, gt=0, description="Stop before the teacher's prompt + completion tokens on pool texts would pass this (the dry-run estimate of each batch, then the counted tokens). The dev split's answers, asked once for calibration, are counted in the run's usage but outside this budget.")
    budget_usd: float | None = Field(None, gt=0, description="Stop before the cost of pool texts would pass this many USD (needs teacher.price_prompt; dev answers outside it, as for budget_tokens).")
    acquisition: str = Field("badge", description="How the next batch is chosen: random, entropy, margin, llkd, kcenter, badge, raru (llkd.acquisition). Default: the best mean dev AUC of the budget curves (docs/results.md).")
    seed_size: str = Field("2.5%", description="The first round, chosen without labels (k-means++ over the student encoder's embeddings): a count or a share of the pool.")
    growth: float = Field(1.5, gt=1.0, description="Each round grows the answered set by this factor (capped by the budget and the milestones).")
    min_round: int = Field(16, ge=1, description="The smallest batch a round asks for (small pools).")
    milestones: list[str] = Field(default_factory=list, description="Budgets (counts or shares) where a round must end, e.g. 5%,10%,20%: the points of a budget curve.")
    round_mode: Literal["frozen", "finetune"] = Field("frozen", description="The student mode of the round students that choose the next batch (frozen: seconds per round). The final student uses student.mode.")
    stop_change: float = Field(0.0, ge=0.0, lt=1.0, description="Label-free early stop: end when fewer than this share of the unanswered pool's student predictions changed since the last round, stop_patience rounds in a row (0: off, run to the budget).")
    stop_patience: int = Field(2, ge=1, description="Rounds in a row under stop_change before stopping.")
    dry_run: bool = Field(False, description="Estimate tokens and cost for the whole pool and for the budget, ask nothing, and exit.")

    @field_validator("budget", "seed_size")
    @classmethod
    def _amount(cls, v: str) -> str:
        parse_amount(v, None)
        return v

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v: Any) -> Any:
        items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v
        for x in items or ():
            parse_amount(str(x), None)
        return [str(x) for x in items or ()]


def parse_amount(spec: str | int | float, pool_size: int | None) -> int:
    """A count (``500``) or a share of the pool (``20%``) as a count of texts; ``pool_size``
    None: check the form only. Zero, negative, NaN and shares over 100 % are refused."""
    text = str(spec).strip()
    try:
        share = text.endswith("%")
        value = float(text[:-1] if share else text)
    except ValueError:
        raise ValueError(f"'{spec}' is neither a count of texts (500) nor a share of the pool (20%)") from None
    if not value > 0 or value != value:
        raise ValueError(f"'{spec}' must be more than 0")
    if value == float("inf"):
        raise ValueError(f"'{spec}' is not a finite amount")
    if share and value > 100:
        raise ValueError(f"'{spec}' is more than the whole pool")
    if not share and value != int(value):
        raise ValueError(f"'{spec}' is not a whole number of texts (use a share such as 2.5%)")
    if pool_size is None:
        return 0
    if share:
        return max(1, int(round(pool_size * value / 100.0)))
    if value > pool_size:
        raise ValueError(f"'{spec}' is more than the {pool_size} texts of the pool")
    return int(value)


class LLKDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @field_validator("data", "teacher", "selection", "student", "distill", mode="before")
    @classmethod
    def _none_is_default(cls, v: Any) -> Any:
        return {} if v is None else v

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LLKDConfig":
        from llkd.errors import yaml_problem

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(e)}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: config must be a mapping of sections (data, teacher, selection, student)")
        for section in SECTIONS:
            value = raw.get(section)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{path}: section '{section}' must be a mapping of options (e.g. {section}: {{{_example_option(section)}}}), "
                                  f"not {type(value).__name__} {str(value)[:40]!r}")
        # Relative paths in a config file are relative to the file, as users expect.
        for section, keys in (("data", ("pool", "test", "dev", "labels")), ("teacher", ("cache",)), ("student", ("output",))):
            sec = raw.get(section) or {}
            for k in keys:
                if isinstance(sec.get(k), str) and not Path(sec[k]).is_absolute():
                    sec[k] = str((path.parent / sec[k]).resolve())
        return cls.validated(raw, source=str(path))

    @classmethod
    def validated(cls, raw: dict[str, Any], source: str = "config") -> "LLKDConfig":
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors())
            raise ConfigError(f"{source}: {msgs}") from e


SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "teacher": TeacherConfig,
    "selection": SelectionConfig,
    "student": StudentConfig,
    "distill": DistillConfig,
}


def _example_option(section: str) -> str:
    name, field = next(iter(SECTIONS[section].model_fields.items()))
    return f"{name}: {field.default if field.default is not None else '...'}"


def _flag(section: str, name: str, field: Any) -> str:
    extra = field.json_schema_extra or {}
    if isinstance(extra, dict) and "flag" in extra:
        return str(extra["flag"])
    return f"--{section}-{name}".replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """Add one flag per config field of the given sections; defaults stay None so the
    config file (or the field default) wins unless the flag is given."""
    parser.add_argument("--config", type=Path, help="YAML config file; flags override it.")
    for section in sections:
        group = parser.add_argument_group(f"{section} options")
        for name, field in SECTIONS[section].model_fields.items():
            help_ = f"{field.description or ''} (default: {field.default})".replace("%", "%%")  # argparse formats help strings with %
            kwargs: dict[str, Any] = {"dest": f"cfg__{section}__{name}", "default": None, "help": help_}
            if field.annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = name.upper()
            group.add_argument(_flag(section, name, field), **kwargs)


def config_from_args(args: argparse.Namespace) -> LLKDConfig:
    base: dict[str, Any] = {}
    if getattr(args, "config", None):
        base = LLKDConfig.from_yaml(args.config).model_dump(exclude_unset=True)
    for key, value in vars(args).items():
        if not key.startswith("cfg__") or value is None:
            continue
        _, section, name = key.split("__")
        base.setdefault(section, {})[name] = value
    return LLKDConfig.validated(base, source="command line")
