"""Models × precisions × prompts, one load at a time: speed, memory, output and drift side by side.

Why one at a time: comparing precisions is mostly done because the larger one barely fits, so
each run loads, measures, leaves its fingerprint (reference only) and is unloaded, with memory
released, before the next one loads. Per model, precisions run highest first, so the reference
for drift is the highest precision that actually loaded (see explorer.analyse.drift).

A failure in one run (a model that does not load, out of memory, a generation error) becomes
that run's `error`; the comparison carries on with the next one.

Peak memory, `peak_method`:
  - "cuda_max_allocated": torch.cuda.max_memory_allocated over load + generation, all devices;
  - "rss_sampled": on CPU, the highest process RSS seen by a sampler thread every 20 ms during
    load + generation, minus the RSS when the run started (what the run added).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import torch

from explorer.analyse.architecture import model_from_config
from explorer.analyse.drift import DriftResult, Fingerprint, by_rank, compare_fingerprints, fingerprint
from explorer.analyse.memory_estimate import estimate_memory, precision_key
from explorer.compare.measure import PeakMemory, TokenClock, machine_info
from explorer.model.generation import GenerateOptions, GenerationError, conversation, generate, prepare
from explorer.model.loading import LoadConfig, LoadedModel, LoadError, Preflight, check_weights, load_model, preflight, release_memory, unload
from explorer.model.precisions import LOAD_PRECISIONS
from explorer.views.units import fmt_bytes

Progress = Callable[[str], None]
CANCELLED = "Cancelled."                       # RunRecord.error of the run a cancel interrupted


@dataclass
class CompareConfig:
    """What to compare. Every model runs in every precision on every prompt."""
    models: list[str]                          # preset keys, hub ids, folders or .gguf paths
    precisions: list[str]                      # subset of nf4, fp4, int8, bf16, fp16, fp32
    prompts: list[str]                         # each sent as one user turn through the chat template
    max_new_tokens: int = 32
    fixed_length: bool = False                 # min_new_tokens = max_new_tokens: EOS cannot end a run
                                               # early (random weights; equal work per precision)
    system_prompt: str | None = None
    drift: bool = True                         # quality drift against the highest precision that loads
    attention_drift: bool = True               # per-head attention difference (needs Q/K of every layer)
    drift_prompts: list[str] | None = None     # None = the same prompts
    double_quant: bool = True                  # 4-bit: quantize the quantization constants too
    compute_dtype: str = "bf16"                # 4-bit: dtype of the matmuls
    warmup: bool = True                        # one short untimed generation before the timed ones
    warmup_tokens: int = 2
    repeats: int = 1                           # timed generations per prompt; the median-speed one is kept

    def validate(self) -> None:
        if not self.models:
            raise ValueError("choose at least one model")
        if not self.precisions:
            raise ValueError("choose at least one precision")
        unknown = [p for p in self.precisions if p not in LOAD_PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision {unknown[0]!r}; choose from {', '.join(LOAD_PRECISIONS)}")
        if not [p for p in self.prompts if p.strip()]:
            raise ValueError("give at least one prompt")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")


@dataclass
class LoadAccess:
    """Operator settings passed to every load; kept out of CompareConfig so they never reach a file."""
    token: str | None = field(default=None, repr=False)
    allow_pickle: bool = False
    trust_remote_code: bool = False
    allow_local_paths: bool = True             # False: presets and hub ids only (served to others)


@dataclass
class PromptOutput:
    """One prompt's generation in one run."""
    prompt: str
    text: str = ""
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0                       # whole generate call
    time_to_first_token: float | None = None   # prefill + first step, seconds
    tokens_per_second: float = 0.0             # decode rate after the first token
    error: str | None = None
    repeat_tokens_per_second: list[float] = field(default_factory=list)   # every repeat, when repeats > 1


@dataclass
class RunRecord:
    """One model in one precision: how it loaded, how fast it ran, what it said, how far it drifted."""
    model: str                                 # the source as given
    precision: str                             # as requested
    model_name: str = ""
    loaded_precision: str | None = None        # what the loader actually ran, after any fallback
    load_seconds: float | None = None
    footprint_bytes: int | None = None         # model.get_memory_footprint()
    peak_bytes: int | None = None
    peak_method: str = ""                      # "cuda_max_allocated" | "rss_sampled" (module docstring)
    time_to_first_token: float | None = None   # mean over prompts
    tokens_per_second: float | None = None     # mean over prompts
    outputs: list[PromptOutput] = field(default_factory=list)
    is_reference: bool = False
    drift: DriftResult | None = None
    drift_error: str | None = None
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    device: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return f"{self.model_name or self.model} · {self.precision}"


@dataclass
class ComparisonResult:
    config: CompareConfig
    runs: list[RunRecord] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# One prompt, one load
# --------------------------------------------------------------------------------------------

def timed_generation(loaded: LoadedModel, prompt: str, max_new_tokens: int, fixed_length: bool = False,
                     system_prompt: str | None = None) -> PromptOutput:
    """Greedy generation of one prompt with per-token timing; errors come back in the output."""
    out = PromptOutput(prompt=prompt)
    options = GenerateOptions(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens if fixed_length else None)
    clock = TokenClock()
    try:
        result = generate(loaded, conversation(prompt, system_prompt), options, streamer=clock)
    except GenerationError as exc:    # one failed prompt is a row, not a crash
        out.error = str(exc)
        return out
    out.text, out.prompt_tokens, out.new_tokens, out.seconds = (result.text, result.prompt_tokens,
                                                                result.new_tokens, result.seconds)
    out.time_to_first_token, out.tokens_per_second = clock.time_to_first_token, clock.tokens_per_second
    return out


def fit_problem(checked: Preflight, double_quant: bool = True) -> str | None:
    """Why this load cannot fit in the memory free now, from the config alone; None when it fits
    or cannot be estimated. On CPU a load that does not fit is not an exception but the kernel's
    OOM killer ending the whole app, so the obvious cases are refused before loading."""
    try:
        need = estimate_memory(model_from_config(checked.model_config),
                               precision_key(checked.precision, double_quant)).allocated_bytes
    except Exception:  # noqa: BLE001 - no estimate: try the load and let it say what happens
        return None
    if torch.cuda.is_available():
        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        where = "free GPU memory"
    else:
        free = psutil.virtual_memory().available
        where = "free RAM"
    if need * 1.05 > free:
        return (f"Does not fit: {checked.resolved.name} in {checked.precision} needs about {fmt_bytes(need)}, "
                f"and {fmt_bytes(free)} of {where} is available. Try a smaller precision.")
    return None


def repeated_generation(loaded: LoadedModel, prompt: str, config: CompareConfig) -> PromptOutput:
    """`config.repeats` timed generations of one prompt; the one with the median decode rate is kept,
    so one slow first run (allocator growth, clocks) or one lucky run does not become the figure."""
    outs = [timed_generation(loaded, prompt, config.max_new_tokens, config.fixed_length, config.system_prompt)
            for _ in range(config.repeats)]
    failed = next((o for o in outs if o.error is not None), None)
    if failed is not None or len(outs) == 1:
        return failed or outs[0]
    ranked = sorted(outs, key=lambda o: o.tokens_per_second)
    kept = ranked[len(ranked) // 2]
    kept.repeat_tokens_per_second = [o.tokens_per_second for o in outs]
    return kept


def drift_ids(loaded: LoadedModel, prompt: str, system_prompt: str | None = None) -> torch.Tensor:
    """(T,) the prompt exactly as generation sends it (chat template included), on CPU."""
    return prepare(loaded, conversation(prompt, system_prompt), 1).input_ids[0].cpu()


def take_fingerprints(loaded: LoadedModel, prompts: list[str], system_prompt: str | None,
                      attention: bool) -> list[Fingerprint]:
    return [fingerprint(loaded.model, loaded.tokenizer, drift_ids(loaded, p, system_prompt), p, attention)
            for p in prompts]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _run_one(config: CompareConfig, model: str, precision: str, prompts: list[str], drift_prompts: list[str],
             reference: tuple[str, list[Fingerprint]] | None, access: LoadAccess,
             progress: Progress | None, cancel: threading.Event | None = None,
             ) -> tuple[RunRecord, list[Fingerprint] | None]:
    """One load → generate → (fingerprint) → unload. Returns the record and, when this run should
    become the reference, its fingerprints. A cancel between steps ends the run as "Cancelled."."""
    record = RunRecord(model=model, precision=precision)
    say = progress or (lambda _m: None)
    release_memory()
    loaded: LoadedModel | None = None
    fingerprints: list[Fingerprint] | None = None
    cfg = LoadConfig(source=model, precision=precision, double_quant=config.double_quant,
                     compute_dtype=config.compute_dtype, token=access.token, allow_pickle=access.allow_pickle,
                     trust_remote_code=access.trust_remote_code, allow_local_paths=access.allow_local_paths)
    try:
        checked = preflight(cfg, progress, weights=False)
        record.error = fit_problem(checked, config.double_quant)  # first: a config-only estimate
        if record.error is not None:
            return record, None
        check_weights(cfg, checked)
    except LoadError as exc:
        record.error = str(exc)
        return record, None
    try:
        peak = PeakMemory()
        with peak:
            try:
                loaded = load_model(cfg, progress, checked)
            except LoadError as exc:
                record.error = str(exc)
                return record, None
            record.model_name, record.loaded_precision = loaded.name, loaded.precision
            record.load_seconds, record.footprint_bytes = loaded.load_seconds, loaded.footprint_bytes
            record.notices = list(loaded.notices)
            record.device = str(loaded.model.get_input_embeddings().weight.device)
            if config.warmup:
                timed_generation(loaded, prompts[0], config.warmup_tokens, system_prompt=config.system_prompt)
            for i, prompt in enumerate(prompts):
                if cancel is not None and cancel.is_set():
                    record.error = CANCELLED
                    return record, None
                say(f"{record.label}: prompt {i + 1} of {len(prompts)}…")
                record.outputs.append(repeated_generation(loaded, prompt, config))
        record.peak_bytes, record.peak_method = int(peak.peak_bytes), peak.method
        done = [o for o in record.outputs if o.error is None]
        record.time_to_first_token = _mean([o.time_to_first_token for o in done if o.time_to_first_token is not None])
        record.tokens_per_second = _mean([o.tokens_per_second for o in done if o.tokens_per_second > 0])
        if len(done) < len(record.outputs):
            record.error = next(o.error for o in record.outputs if o.error is not None)
        if config.drift and not (cancel is not None and cancel.is_set()):
            say(f"{record.label}: measuring drift…")
            try:
                prints = take_fingerprints(loaded, drift_prompts, config.system_prompt, config.attention_drift)
                if reference is None:
                    record.is_reference, fingerprints = True, prints
                else:
                    record.drift = compare_fingerprints(reference[1], prints, reference[0], loaded.precision)
                    del prints
            except Exception as exc:  # noqa: BLE001 - drift is extra; its failure must not lose the run
                if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
                    release_memory()
                record.drift_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001 - out of memory or anything unforeseen: a row, not a crash
        oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()
        record.error = "Out of memory." if oom else f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        unload(loaded)
        del loaded
        release_memory()
    return record, fingerprints


def run_comparison(config: CompareConfig, progress: Progress | None = None,
                   on_record: Callable[[RunRecord], None] | None = None,
                   access: LoadAccess | None = None, cancel: threading.Event | None = None) -> ComparisonResult:
    """Run every model × precision, one resident model at a time, and return every record.

    `progress` receives one line per step; `on_record` each finished record (for a live table);
    `access` the token and operator opt-ins for loading (default: none, the secure defaults);
    `cancel`, once set, stops before the next prompt or run (a load or a generation in flight
    finishes first) and returns the records so far, the interrupted one marked CANCELLED.
    """
    access = access or LoadAccess()
    config.validate()
    prompts = [p for p in config.prompts if p.strip()]
    drift_prompts = [p for p in (config.drift_prompts or prompts) if p.strip()] or prompts
    result = ComparisonResult(config=config, machine=machine_info(), started=time.strftime("%Y-%m-%d %H:%M:%S"))
    started = time.perf_counter()
    order = by_rank(list(config.precisions))
    models = list(dict.fromkeys(config.models))
    total = len(models) * len(order)
    say = progress or (lambda _m: None)
    for model in models:
        reference: tuple[str, list[Fingerprint]] | None = None
        for precision in order:
            if cancel is not None and cancel.is_set():
                break
            say(f"Run {len(result.runs) + 1} of {total}: {model} in {precision}")
            record, prints = _run_one(config, model, precision, prompts, drift_prompts, reference, access, progress,
                                      cancel)
            if prints is not None:
                reference = (record.loaded_precision or precision, prints)
            result.runs.append(record)
            if on_record is not None:
                on_record(record)
        del reference
        release_memory()
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["CompareConfig", "ComparisonResult", "LoadAccess", "PeakMemory", "PromptOutput", "RunRecord", "TokenClock",
           "fit_problem", "machine_info", "repeated_generation", "run_comparison", "take_fingerprints", "timed_generation"]
