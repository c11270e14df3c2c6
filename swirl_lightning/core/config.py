"""The config vocabulary every command shares, and how a dataclass config becomes a command line.

One typed dataclass per concern, the same keys at every stage, in YAML, on the command line and in the config
dumped beside every run:

=============  ===============================================  ==========================================
group          what it says                                     read by
=============  ===============================================  ==========================================
``policy``     the model and its warm-start adapter             generate, fit, validate
``task``       the questions: task, split, slice, action cap     generate, filter, fit, validate, data reference
``sampling``   how model turns are sampled                      generate; fit (``swirl``'s G actions)
``engine``     what samples them: in-process or a vLLM server   generate, fit, validate
``tools``      which tools, their limits, plugins' options      generate, fit, validate, tools, data reference
``judge``      the step judge and the outcome judge             filter, fit (reward, data filter), validate
=============  ===============================================  ==========================================

``swirl generate --policy.name M --policy.adapter A``, ``swirl fit --policy.name M --policy.adapter A``.
Values are checked in ``__post_init__``, when the command line is parsed: before any model loads.
Attribute docstrings are the ``--help`` text (jsonargparse reads them); YAML may use OmegaConf ``${...}``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class PolicyConfig:
    """The policy: which causal LM, and the warm-start adapter merged into it."""

    name: str = "smollm2-135m-instruct"
    """Model: an alias (``smollm2-135m-instruct``, ``tiny-random``), a local folder or a hub id."""
    adapter: str | None = None
    """A PEFT (LoRA) adapter folder merged into the weights, e.g. the warm start ``adapters/gsm8k_warmup``."""
    dtype: str = "float32"
    """Weight dtype when loading: ``float32``, ``bfloat16`` or ``float16``."""
    attn_implementation: str = "sdpa"
    """``sdpa`` or ``eager`` (both take the 4D masks of packed groups)."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "policy.name: expected a model alias, folder or hub id")
        _check(self.dtype in ("float32", "bfloat16", "float16"),
               f"policy.dtype: expected float32, bfloat16 or float16, got {self.dtype!r}")
        _check(self.attn_implementation in ("sdpa", "eager"),
               f"policy.attn_implementation: expected sdpa or eager, got {self.attn_implementation!r}")

    @property
    def label(self) -> str:
        """``name`` or ``name+adapter``: how trajectories record the policy."""
        return self.name + (f"+{self.adapter}" if self.adapter else "")


@dataclass
class SamplingConfig:
    """How model turns are sampled."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 192
    """Most tokens in one model turn."""
    batch_size: int = 8
    """Conversations decoded together."""
    max_context_tokens: int = 4096
    """Most tokens in one conversation (prompt, turns and tool results)."""
    seed: int = 0
    """Seed of the draws (each conversation has its own generator, seeded from this and its own seed)."""
    prefill_batch_tokens: int = 4096
    """Most (padded) tokens in one prefill forward pass; longer prefills are split."""
    min_shared_prefix: int = 16
    """Shortest prompt head worth computing once and copying into each slot (0 turns prefix sharing off)."""
    kv_cache_dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    """What the in-process engine stores keys and values in: ``auto``, the model's dtype; ``bfloat16`` or ``float16``
    halve a float32 model's cache, attention then runs in that dtype (greedy tokens may differ slightly)."""

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, f"sampling.temperature: expected >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"sampling.top_p: expected a value in (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "batch_size", "max_context_tokens", "prefill_batch_tokens"):
            _check(getattr(self, name) >= 1, f"sampling.{name}: expected a positive integer, got {getattr(self, name)}")
        _check(self.min_shared_prefix >= 0, f"sampling.min_shared_prefix: expected >= 0, got {self.min_shared_prefix}")
        _check(self.kv_cache_dtype in ("auto", "bfloat16", "float16"),
               f"sampling.kv_cache_dtype: expected auto, bfloat16 or float16, got {self.kv_cache_dtype!r}")


@dataclass
class EngineConfig:
    """What samples model turns: the in-process engine (the default and the reference) or a vLLM server."""

    name: Literal["in_process", "vllm"] = "in_process"
    """``in_process`` (:mod:`swirl_lightning.rollout.engine`) or ``vllm`` (an OpenAI-compatible vLLM server, driven
    with token ids in and out: :mod:`swirl_lightning.rollout.vllm_backend`)."""
    base_url: str | None = None
    """With ``vllm``: a server you started (``http://127.0.0.1:8000``), serving the policy's weights (its warm-start
    adapter merged) with ``--enable-lora``; null starts a managed server and stops it at the end of the run."""
    python: str = ".venv-vllm/bin/python"
    """The interpreter of the managed server's own virtualenv (``make vllm`` creates it)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype of the managed server; ``auto`` takes ``policy.dtype``."""
    kv_cache_gib: float = 2.0
    """KV cache of the managed server in GiB (``VLLM_CPU_KVCACHE_SPACE`` on a CPU)."""
    max_num_batched_tokens: int = 16384
    """Tokens per server step (vLLM's ``--max-num-batched-tokens``); smaller values chunk prefills."""
    max_lora_rank: int = 16
    """Largest LoRA rank the managed server accepts (at least ``lora.r``)."""
    server_args: list[str] = field(default_factory=list)
    """More command-line arguments of the managed server, e.g. ``[--tensor-parallel-size, "2"]`` on GPUs."""
    startup_timeout_s: float = 600.0
    """Seconds the managed server may take to answer ``/health``."""
    request_timeout_s: float = 600.0
    """Seconds one model turn may take on the server (a request past it is retried)."""
    max_retries: int = 2
    """Retries of a failed request while the server is up; the rollout is then recorded as failed."""
    sync_every: int = 1
    """``swirl fit``: optimizer updates between two adapter syncs to the server (actions are at most ``sync_every - 1``
    updates stale; ``train/policy_staleness`` logs it)."""

    def __post_init__(self) -> None:
        _check(self.name in ("in_process", "vllm"), f"engine.name: expected in_process or vllm, got {self.name!r}")
        _check(self.base_url is None or self.base_url.startswith(("http://", "https://")),
               f"engine.base_url: expected an http(s):// address or null, got {self.base_url!r}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"),
               f"engine.dtype: expected auto, float32, bfloat16 or float16, got {self.dtype!r}")
        _check(self.kv_cache_gib > 0, f"engine.kv_cache_gib: expected a number > 0, got {self.kv_cache_gib}")
        for name in ("max_num_batched_tokens", "max_lora_rank", "sync_every"):
            _check(getattr(self, name) >= 1, f"engine.{name}: expected a positive integer, got {getattr(self, name)}")
        _check(self.max_retries >= 0, f"engine.max_retries: expected 0 or more, got {self.max_retries}")
        for name in ("startup_timeout_s", "request_timeout_s"):
            _check(getattr(self, name) > 0, f"engine.{name}: expected a number > 0, got {getattr(self, name)}")
        _check(all(isinstance(a, str) for a in self.server_args),
               f"engine.server_args: expected a list of strings, got {self.server_args!r}")


def greedy(**changes: Any) -> SamplingConfig:
    """Sampling for evaluation: greedy decoding, with ``changes``."""
    return SamplingConfig(**{"temperature": 0.0, **changes})


@dataclass
class TaskConfig:
    """The questions: which task and which of its questions, and how a rollout on them is framed."""

    name: str = "gsm8k"
    """Registered task: ``gsm8k``, ``hotpotqa``, ``worlds``, ``jsonl`` (with ``data_path``), or one a plugin adds."""
    split: str = "train"
    """Split of the questions (for training: the split the trajectories answer)."""
    data_path: str | None = None
    """A JSONL file of questions replacing the task's packaged one (required by ``jsonl``); for ``worlds``, a world
    folder or a folder of one world folder per split."""
    limit: int | None = None
    """Use the first N questions of the split (after ``offset``); null for all."""
    offset: int = 0
    """Skip this many questions of the split first (e.g. those a warm start was trained on)."""
    max_actions: int | None = None
    """Most actions per rollout; the task's default when null (10 for gsm8k, 5 for hotpotqa). Not to be confused with
    ``trainer.max_steps``, the optimizer steps of a fit."""
    few_shot: bool = True
    """Put the task's hand-written example turns in the prompt."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "task.name: expected a registered task name")
        _check(self.offset >= 0, f"task.offset: expected 0 or more questions to skip, got {self.offset}")
        _check(self.limit is None or self.limit >= 1, f"task.limit: expected a positive integer or null, got {self.limit}")
        _check(self.max_actions is None or self.max_actions >= 1,
               f"task.max_actions: expected a positive integer or null, got {self.max_actions}")


@dataclass
class ToolsConfig:
    """The tools a rollout may call, and the limits of each call."""

    names: list[str] | None = None
    """Registered tool names; the task's default when null."""
    timeout_s: float = 10.0
    """Seconds before a tool call is stopped (its worker process killed; the model sees an error)."""
    max_output_chars: int = 1000
    """Longer tool output is cut, with a visible marker."""
    warm_up_timeout_s: float = 900.0
    """Seconds a tool's warm-up (loading or building an index) may take before it counts as failed."""
    max_error_rate: float = 0.5
    """``swirl generate`` warns (or fails, with ``on_error_rate: fail``) when more of the tool calls than this fail:
    a misconfigured tool would otherwise fill the training data with error messages."""
    on_error_rate: Literal["warn", "fail"] = "warn"
    """What ``swirl generate`` does above ``max_error_rate``: warn at the end, or stop the run (after 20 calls)."""
    pid_namespace: bool = True
    """Run the tools in a PID namespace of their own where the OS allows (root): no tool can signal the run. Turn it
    off for a tool that must see the host's process ids."""
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options of tool plugins, by plugin name (its entry point's name: ``mcp`` for swirl-mcp): each plugin's
    ``register_tools`` hook gets its own mapping, ``{}`` when absent. E.g. ``{mcp: {servers: [{name: files, command:
    [python, -m, my_server], tools: [read_file]}]}}``, or ``--config conf/mcp/example.yaml``. A name no loaded plugin
    has, or options its plugin rejects, is an error naming the key."""

    def __post_init__(self) -> None:
        _check(self.timeout_s > 0, f"tools.timeout_s: expected a number > 0, got {self.timeout_s}")
        _check(self.warm_up_timeout_s > 0, f"tools.warm_up_timeout_s: expected a number > 0, got {self.warm_up_timeout_s}")
        _check(0 <= self.max_error_rate <= 1, f"tools.max_error_rate: expected a share in [0, 1], got {self.max_error_rate}")
        _check(self.on_error_rate in ("warn", "fail"), f"tools.on_error_rate: expected warn or fail, got {self.on_error_rate!r}")
        _check(isinstance(self.max_output_chars, int) and not isinstance(self.max_output_chars, bool)
               and self.max_output_chars >= 1,
               f"tools.max_output_chars: expected a positive integer, got {self.max_output_chars}")
        _check(isinstance(self.plugins, dict) and all(isinstance(k, str) and isinstance(v, dict)
                                                      for k, v in self.plugins.items()),
               f"tools.plugins: expected a mapping of plugin names to mappings of options, got {self.plugins!r:.200}")


@dataclass
class JudgeConfig:
    """The step judge (filtering, the ``swirl`` reward, the validation GOOD rate) and the outcome judge."""

    name: str = "reference"
    """Registered step judge: ``reference`` (the task's gold data: worked solutions, gold paths), ``process`` (a local
    LM, gold-free), ``served`` (an LLM on an OpenAI-compatible server, gold-free), or the controls ``random`` and
    ``format`` (no knowledge of the task: learning experiments)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of the step judge, e.g. ``{model: smollm2-135m-instruct, threshold: 0.5}`` for ``process`` or
    ``{base_url: http://127.0.0.1:8000/v1, model: M, api_key_env: OPENAI_API_KEY}`` for ``served``."""
    outcome: str | None = None
    """Registered outcome judge (``numeric``, ``qa_em``, ``qa_f1``, ``grader``, ``served_grader``); the task's when
    null."""
    outcome_options: dict[str, Any] = field(default_factory=dict)
    """Options of the outcome judge (``served_grader`` needs ``base_url`` and ``model``)."""
    batch_size: int = 16
    """Steps per judge call (judgements are cached after each call; a served judge stores each as it arrives)."""
    max_failure_rate: float = 0.1
    """Most judge failures (no verdict after the retries) per judged step before the run stops with an error."""
    failure_rate_after: int = 50
    """Judged steps before ``max_failure_rate`` is checked (a filter checks it at its end whatever the count)."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "judge.name: expected a registered step judge")
        _check(self.batch_size >= 1, f"judge.batch_size: expected a positive integer, got {self.batch_size}")
        _check(0 <= self.max_failure_rate <= 1,
               f"judge.max_failure_rate: expected a share between 0 and 1, got {self.max_failure_rate}")
        _check(self.failure_rate_after >= 1,
               f"judge.failure_rate_after: expected a positive integer, got {self.failure_rate_after}")


SHARED_GROUPS: dict[str, type] = {
    "policy": PolicyConfig, "task": TaskConfig, "sampling": SamplingConfig, "engine": EngineConfig,
    "tools": ToolsConfig, "judge": JudgeConfig,
}
"""The shared groups by key, as every command spells them."""


# ----------------------------------------------------------------------------------------------------
# Dataclass configs as command lines


def with_base_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--config BASE`` put before each ``--config FILE`` whose YAML names a base: a top-level
    ``config: PATH`` key, relative to the file's folder (``config: base/fit.yaml`` in ``conf/quickstart.yaml``), the
    base's own base first. Read in place, jsonargparse would let each group the file sets replace the base's group
    whole; given first, the base is merged key by key, as several ``--config`` files are, and the file's keys win.
    Each file is checked against the bounds of :mod:`.safe_load` before it is read."""
    import os
    from pathlib import Path

    import yaml

    from swirl_lightning.core.safe_load import check_config_arguments

    def bases(path: str, seen: tuple[str, ...]) -> list[str]:
        if not path.endswith((".yaml", ".yml", ".json")) or not os.path.isfile(path):
            return []
        check_config_arguments(["--config", path])
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        base = document.get("config") if isinstance(document, dict) else None
        if not isinstance(base, str):
            return []
        base = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if base in seen:
            raise ValueError(f"--config {path}: its base {base} names it again (config: ... in a loop)")
        return [*bases(base, (*seen, base)), "--config", base]

    expanded: list[str] = []
    for i, token in enumerate(argv):
        value = token.split("=", 1)[1] if token.startswith("--config=") else (
            argv[i + 1] if token == "--config" and i + 1 < len(argv) else None)
        if value is not None:
            expanded += bases(value, (os.path.normpath(value),))
        expanded.append(token)
    return expanded


def parse_config(cls: type[T], argv: list[str], prog: str, positional: Sequence[str] = (),
                 only_own_groups: bool = False) -> T:
    """Parse ``argv`` (``--config`` files and ``--field`` / ``--group.field`` overrides) into dataclass ``cls``: the
    parser of every ``swirl`` command but LightningCLI's. ``positional`` fields are given by position
    (``swirl tools call NAME QUERY``). With ``only_own_groups``, a ``--config`` file's keys that ``cls`` lacks are left
    aside: a run's config given to a command that reads one of its groups (``swirl tools call --config run.yaml``).
    Every config file and inline value is checked against the bounds of :mod:`.safe_load` first, and a flag a release
    renamed is a one-line error naming the new one (:mod:`.renamed`)."""
    from swirl_lightning.core.renamed import check_renamed_flags
    from swirl_lightning.core.safe_load import check_config_arguments

    check_config_arguments(argv)
    check_renamed_flags(prog, argv)
    argv = with_base_configs(argv)  # a config's base (its `config:` key) first, merged key by key
    if only_own_groups:
        argv = _own_groups_of_config_files(cls, argv)
    parser = config_parser(cls, prog, positional)
    namespace = parser.parse_args(argv)
    try:
        # jsonargparse 4.49 renamed instantiate_classes to instantiate (the old name warns, and goes in 5.0).
        instance = (parser.instantiate if hasattr(parser, "instantiate") else parser.instantiate_classes)(namespace)
        return cls(**{f.name: instance[f.name] for f in dataclasses.fields(cls) if f.name in instance})
    except ValueError as error:  # a dataclass's own validation: report it like any bad flag
        parser.error(str(error))
        raise  # parser.error exits


def config_parser(cls: type, prog: str, positional: Sequence[str] = ()) -> Any:
    """The jsonargparse parser :func:`parse_config` reads a command line of ``cls`` with (its ``--help``)."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip(), parser_mode="omegaconf",
                            exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (later flags override it)")
    parser.add_class_arguments(cls, as_group=False, skip=set(positional))
    docs = _attribute_docstrings(cls)
    lists = {f.name for f in dataclasses.fields(cls) if f.default_factory is list}  # any number of them, maybe none
    for name in positional:
        if name in lists:
            parser.add_argument(name, metavar=name.upper(), help=docs.get(name, ""), nargs="*", default=[])
        else:
            parser.add_argument(name, metavar=name.upper(), help=docs.get(name, ""))
    return parser


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each annotated attribute of dataclass ``cls`` (a positional argument's help)."""
    import ast
    import inspect
    import textwrap

    definition = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(definition, ast.ClassDef)
    body = definition.body
    return {node.target.id: " ".join(after.value.value.split()) for node, after in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)}


def _own_groups_of_config_files(cls: type, argv: list[str]) -> list[str]:
    """``argv`` with each ``--config FILE`` replaced by the file's keys that ``cls`` has (inline): as a run reads it,
    with OmegaConf, every ``${...}`` resolved first (one may name a group left aside)."""
    from omegaconf import OmegaConf

    own = {f.name for f in dataclasses.fields(cls)}
    result, tokens = [], iter(argv)
    for token in tokens:
        option, given, value = token.partition("=")
        if option != "--config":
            result.append(token)
            continue
        path = value if given else next(tokens, "")
        document = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(document, dict):
            raise ValueError(f"--config {path}: expected a mapping of config groups")
        result += ["--config", json.dumps({key: part for key, part in document.items() if key in own})]
    return result
