"""Rollout throughput and greedy agreement of the generation backends: the in-process engine against vLLM, side by side.

    python benchmarks/generation_bench.py [--backends engine_fp32 engine_bf16 engine_fp32_lora vllm_fp32 vllm_bf16
                                            vllm_bf16_lora] [--batch-sizes 16] [--task.limit 24]
                                          [--task.max_actions 4] [--sampling.max_new_tokens 64]
                                          [--vllm-python .venv-vllm/bin/python
                                           | --base-url URL [--base-url-dtype float32]]
                                          [--out benchmarks/results/generation.json]
    python benchmarks/generation_bench.py --backends engine_fp32 --batch-sizes 1 8 16 32 --task.limit 96   # the
                                          # in-process engine's batch-size sweep (3 x the largest batch keeps it full)
    python benchmarks/generation_bench.py --smoke [--base-url URL]    # tiny random model, seconds (the test suite)

Arms (``--backends``), each ``<backend>_<dtype>[_lora]``:

- ``engine_*``: the in-process engine (:mod:`swirl_lightning.rollout.engine`) with the model loaded in that dtype;
- ``vllm_*``: a vLLM server (:mod:`swirl_lightning.rollout.vllm_backend`). Its dtype is fixed when it starts, so one
  managed server per dtype is started from ``--vllm-python`` (the first arm of a dtype starts it; it is stopped when
  that dtype's arms are done, and at the end in any case) and its start time is recorded. With ``--base-url`` the
  vLLM arms run on that one server instead (``--base-url-dtype``: the dtype it was started with; arms of another dtype
  are left out);
- ``_lora``: the warm-start adapter ``--policy.adapter`` (``adapters/gsm8k_warmup``, rank 16) applied *unmerged*: in
  process through PEFT (``PeftModel.from_pretrained``: the LoRA matmuls run at every step), on vLLM hot-loaded with
  ``/v1/load_lora_adapter`` (vLLM's LoRA path; its CPU version is a slow fallback). A merged adapter would cost
  nothing at generation time and is not what training on vLLM does (it syncs an unmerged adapter).

Every arm rolls out the same ``--task.limit`` GSM8K train questions (one sample each, the zero-shot prompt, the
calculator, at most ``--task.max_actions`` model turns of at most ``--sampling.max_new_tokens`` tokens) twice, at each
batch size (the library's settings are its shared groups, ``--policy.name`` the model, spelled as ``swirl`` spells
them):

1. a sampled pass (temperature 1, ``sampling.seed`` 0: the same seeds on every arm): generated tokens/s over the
   pass's whole wall time, the throughput figure;
2. a greedy pass, compared with the greedy pass of its reference arm, ``engine_fp32`` (``engine_fp32_lora`` for a
   ``_lora`` arm; a reference an arm needs is added to the run): ``greedy_action_agreement`` is the share of actions
   (model turns, aligned by question and turn index, the longer trajectory of the two counting) whose token ids equal
   the reference's, ``greedy_trajectory_agreement`` the share of trajectories equal in every action.
   In float32 both backends pick the same greedy tokens; in bfloat16 rounding flips near-tied argmaxes and the
   trajectories part from there.

Threads: ``--threads`` (default: every core this process may use) torch threads for the in-process arms and the same
cores for a managed server (``VLLM_CPU_OMP_THREADS_BIND``), so both sides get the same CPU. The load average is
recorded before the run and after each arm; a run waits (``--quiet-retries`` times ``--quiet-wait-s``) while the
1-minute load average is above ``--quiet-load`` and says so in the result.

Writes a JSON result (machine, versions, command, one record per arm and batch size: backend, dtype, adapter,
tokens_per_second, greedy agreement, wall seconds, generated tokens, the vLLM server's start seconds) and a PNG plot
(tokens/s and agreement per arm). The in-process arms also record the engine's own counters (prefill, decode tokens/s
by turn, tokens/s while the batch was kept full).

``--smoke``: the tiny random model on 4 questions, arms ``engine_fp32 engine_bf16 engine_fp32_lora`` at batch sizes 1
and 4 (the LoRA arm with a random rank-4 adapter made for it); with ``--base-url``, also ``vllm_fp32`` on that server
(which must serve SmolLM2-135M-Instruct in float32) and its ``engine_fp32`` reference with that model, on 2 questions
(batch 2, actions of up to 24 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_info, parse_with_shared_groups, subplots, write_result  # noqa: E402

ARMS = ("engine_fp32", "engine_bf16", "engine_fp32_lora", "vllm_fp32", "vllm_bf16", "vllm_bf16_lora")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
ARM_PATTERN = re.compile(r"^(engine|vllm)_(fp32|bf16)(_lora)?$")


class Arm:
    """One backend setting: ``<backend>_<dtype>[_lora]`` on a model."""

    def __init__(self, name: str, model: str, adapter: str | None):
        match = ARM_PATTERN.match(name)
        if match is None:
            raise SystemExit(f"--backends: {name!r} is not <engine|vllm>_<fp32|bf16>[_lora]")
        self.name, self.model = name, model
        self.backend, self.short_dtype, lora = match.group(1), match.group(2), bool(match.group(3))
        self.dtype = DTYPES[self.short_dtype]
        self.adapter = adapter if lora else None
        if lora and not adapter:
            raise SystemExit(f"{name}: a _lora arm needs --adapter")

    @property
    def reference(self) -> str:
        return "engine_fp32_lora" if self.adapter else "engine_fp32"

    def record(self) -> dict:
        mode = None
        if self.adapter:
            mode = ("unmerged: PEFT LoRA layers in the forward pass" if self.backend == "engine"
                    else "unmerged: hot-loaded with /v1/load_lora_adapter (vLLM's LoRA path)")
        return {"arm": self.name, "backend": "in_process" if self.backend == "engine" else "vllm",
                "dtype": self.dtype, "model": self.model, "adapter": self.adapter, "adapter_mode": mode}


def arms_to_run(names: list[str], model: str, adapter: str | None) -> list[Arm]:
    """The arms of ``names``, with the references they need added; the in-process ones first (the references first of
    all), then the vLLM ones grouped by dtype (one server at a time)."""
    wanted = list(dict.fromkeys(names))
    for name in list(wanted):
        reference = Arm(name, model, adapter).reference
        if reference not in wanted:
            print(f"{name}: adding its greedy reference arm {reference}", flush=True)
            wanted.append(reference)
    arms = [Arm(n, model, adapter) for n in wanted]
    order = {"engine_fp32": 0, "engine_fp32_lora": 1}
    return sorted(arms, key=lambda a: (a.backend != "engine", a.dtype != "float32" if a.backend == "vllm" else 0,
                                       order.get(a.name, 2), wanted.index(a.name)))


# -- one pass ------------------------------------------------------------------------------------------


def roll_out(backend, examples, settings) -> tuple[list, float]:
    """Run every example once through ``backend``; the trajectories (in example order) and the wall seconds."""
    from swirl_lightning.rollout.conversation import conversations

    finished = []
    started = time.perf_counter()
    backend.run(conversations(examples, 1, settings), lambda c: finished.append(c.trajectory))
    wall = time.perf_counter() - started
    order = {e.id: i for i, e in enumerate(examples)}
    return sorted(finished, key=lambda t: order[t.example_id]), wall


def actions(trajectory) -> list[list[int]]:
    return [list(step.token_ids or []) for step in trajectory.steps]


def agreement(reference: dict[str, list[list[int]]], other: dict[str, list[list[int]]]) -> dict:
    """Greedy agreement of ``other`` with ``reference`` (question id -> action token ids)."""
    equal = total = same = 0
    first_divergence = []
    for key, ref in reference.items():
        mine = other.get(key, [])
        total += max(len(ref), len(mine))
        equal += sum(a == b for a, b in zip(ref, mine))
        same += ref == mine
        diverged = next((i for i, (a, b) in enumerate(zip(ref, mine)) if a != b), None)
        if diverged is None and len(ref) != len(mine):
            diverged = min(len(ref), len(mine))
        if diverged is not None:
            first_divergence.append(diverged)
    return {"greedy_action_agreement": round(equal / max(total, 1), 4),
            "greedy_trajectory_agreement": round(same / max(len(reference), 1), 4),
            "greedy_actions_compared": total,
            "greedy_first_divergence_turns": first_divergence}


def make_backend(arm: Arm, loaded, sampling, settings, server):
    """The generation backend of ``arm`` with ``sampling``."""
    if arm.backend == "engine":
        from swirl_lightning.rollout.engine import GenerationEngine

        policy, tokenizer = loaded
        return GenerationEngine(policy, tokenizer, sampling, stop_strings=settings.stop_strings)
    from swirl_lightning.core.config import EngineConfig
    from swirl_lightning.rollout.vllm_backend import VllmBackend

    vllm, model_name = server
    return VllmBackend(vllm, loaded[1], sampling, EngineConfig(name="vllm"), settings.stop_strings, model=model_name)


def run_arm(arm: Arm, loaded, server, settings, examples, batch_size: int, max_new_tokens: int) -> dict:
    """The sampled and the greedy pass of one arm at one batch size."""
    from swirl_lightning.core.config import SamplingConfig, greedy

    record = {**arm.record(), "batch_size": batch_size, "questions": len(examples), "max_new_tokens": max_new_tokens}
    sampled = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, batch_size=batch_size, seed=0)
    backend = make_backend(arm, loaded, sampled, settings, server)
    trajectories, wall = roll_out(backend, examples, settings)
    stats = backend.stats
    record.update({
        "wall_seconds": round(wall, 2),
        "generated_tokens": stats.generated_tokens,
        "tokens_per_second": round(stats.generated_tokens / wall, 2),
        "trajectories": len(trajectories),
        "trajectories_per_second": round(len(trajectories) / wall, 4),
        "steps_mean": round(sum(len(t.steps) for t in trajectories) / max(len(trajectories), 1), 3),
        "prefill_tokens": stats.prefill_tokens,
    })
    if arm.backend == "engine":
        record.update({
            "prefix_cached_tokens": stats.prefix_cached_tokens,
            # While conversations were still waiting for a slot (the batch kept full); the rest is the final drain.
            "queued_seconds": round(stats.queued_seconds, 2),
            "queued_tokens_per_second": round(stats.queued_tokens / max(stats.queued_seconds, 1e-9), 2),
            "prefill_seconds": round(stats.prefill_seconds, 2),
            "decode_seconds": round(stats.decode_seconds, 2),
            "decode_tokens_per_second_by_turn": {str(k): round(v, 2)
                                                 for k, v in stats.tokens_per_second_by_turn().items()},
        })
    backend = make_backend(arm, loaded, greedy(max_new_tokens=max_new_tokens, batch_size=batch_size), settings,
                           server)
    greedy_trajectories, greedy_wall = roll_out(backend, examples, settings)
    record.update({
        "greedy_wall_seconds": round(greedy_wall, 2),
        "greedy_generated_tokens": backend.stats.generated_tokens,
        "greedy_accuracy": round(sum(bool(t.outcome) for t in greedy_trajectories) / max(len(examples), 1), 4),
        "failed": sum("failure" in t.metadata for t in trajectories),
        "greedy_failed": sum("failure" in t.metadata for t in greedy_trajectories),
    })
    record["_greedy"] = {t.example_id: actions(t) for t in greedy_trajectories}
    return record


# -- models and servers ------------------------------------------------------------------------------


def load_in_process(arm: Arm):
    """Model (in ``arm.dtype``, its adapter unmerged) and tokenizer of an in-process arm."""
    from swirl_lightning.core.config import PolicyConfig
    from swirl_lightning.rollout.generate import load_policy

    policy, tokenizer = load_policy(PolicyConfig(arm.model, dtype=arm.dtype), "auto")
    if arm.adapter:
        from peft import PeftModel

        policy = PeftModel.from_pretrained(policy, arm.adapter).eval()
        policy.to(next(p for p in policy.parameters()).dtype)
    return policy.eval(), tokenizer


def adapter_rank(folder: str) -> int:
    return int(json.loads((Path(folder) / "adapter_config.json").read_text()).get("r", 16))


class Servers:
    """The vLLM servers of the run: managed ones (one per dtype, started on first use) or the one at ``--base-url``."""

    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.running: dict[str, object] = {}
        self.records: dict[str, dict] = {}
        self.adapters: dict[tuple[str, str], str] = {}

    def get(self, arm: Arm):
        """(server, model name to ask for) of ``arm`` (the adapter loaded on first use), and the server's record."""
        from swirl_lightning.core.config import EngineConfig, PolicyConfig
        from swirl_lightning.rollout.vllm_server import VllmServer

        key = "base_url" if self.args.base_url else arm.dtype
        if key not in self.running:
            self.stop_all()  # one server at a time: two would share the CPU
            log = self.workdir / f"vllm-{key}.log"
            started = time.perf_counter()
            if self.args.base_url:
                server = VllmServer.connect(EngineConfig(name="vllm", base_url=self.args.base_url),
                                            PolicyConfig(arm.model), log)
            else:
                adapter = self.args.shared.policy.adapter
                rank = max(16, adapter_rank(adapter) if adapter else 16)
                engine = EngineConfig(name="vllm", python=self.args.vllm_python, dtype=arm.dtype,
                                      kv_cache_gib=self.args.kv_cache_gib, max_lora_rank=rank,
                                      server_args=list(self.args.server_args))
                print(f"starting a vLLM server ({arm.dtype}; log {log})", flush=True)
                server = VllmServer.start(engine, PolicyConfig(arm.model), log, max_context_tokens=4096)
            self.running[key] = server
            self.records[key] = {"dtype": arm.dtype, "managed": not self.args.base_url, "base_url": server.base_url,
                                 "served_model": server.model, "start_seconds": round(time.perf_counter() - started, 2),
                                 "log": str(log) if not self.args.base_url else None,
                                 "server_args": list(self.args.server_args)}
        server = self.running[key]
        name = server.model
        if arm.adapter:
            if (key, arm.adapter) not in self.adapters:
                name = f"{Path(arm.adapter).name}-{os.getpid()}"
                started = time.perf_counter()
                server.load_adapter(name, arm.adapter)
                self.records[key]["adapter_load_seconds"] = round(time.perf_counter() - started, 2)
                self.adapters[(key, arm.adapter)] = name
            name = self.adapters[(key, arm.adapter)]
        return (server, name), self.records[key]

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()


def random_adapter(model: str, folder: Path) -> str:
    """A random rank-4 LoRA adapter for ``model`` (the smoke's stand-in for the warm start), saved to ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from swirl_lightning.core.models import load_model

    lm = get_peft_model(load_model(model, dtype="float32"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in lm.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    lm.save_pretrained(folder)
    return str(folder)


def wait_for_quiet(args) -> dict:
    """Wait while the 1-minute load average is above ``--quiet-load`` (``--quiet-retries`` waits at most)."""
    loads = [os.getloadavg()]
    while loads[-1][0] > args.quiet_load and len(loads) <= args.quiet_retries:
        print(f"load average {loads[-1][0]:.2f} > {args.quiet_load}: waiting {args.quiet_wait_s:g} s", flush=True)
        time.sleep(args.quiet_wait_s)
        loads.append(os.getloadavg())
    return {"threshold": args.quiet_load, "load_averages_seen": loads, "waits": len(loads) - 1,
            "quiet_at_start": loads[-1][0] <= args.quiet_load}


# -- report ------------------------------------------------------------------------------------------


def plot(result: dict):  # the figure write_result saves
    runs = result["runs"]
    fig, (left, right) = subplots(1, 2, figsize=(12, 4.5))
    sizes = sorted({r["batch_size"] for r in runs})
    models = {r["model"] for r in runs}

    def label(r):
        return f"{r['arm']}\n{r['model']}" if len(models) > 1 else r["arm"]

    labels = list(dict.fromkeys(label(r) for r in runs))

    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        of_size = {label(r): r for r in runs if r["batch_size"] == size}
        xs = [i + k * width for i, name in enumerate(labels) if name in of_size]
        bars = left.bar(xs, [of_size[n]["tokens_per_second"] for n in labels if n in of_size], width,
                        label=f"batch {size}")
        left.bar_label(bars, fmt="%.0f", fontsize=7)
    left.set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(labels))], labels, rotation=30, ha="right",
                    fontsize=8)
    left.set_ylabel("generated tokens/s (sampled pass, wall)")
    left.set_title(f"rollout throughput ({result['questions']} questions)")
    left.legend()
    left.grid(alpha=0.3, axis="y")
    compared = list({label(r): r for r in runs if r.get("greedy_reference")}.values())  # each arm's largest batch
    xs = range(len(compared))
    for offset, key, name in ((-0.2, "greedy_action_agreement", "actions"),
                              (0.2, "greedy_trajectory_agreement", "trajectories")):
        bars = right.bar([x + offset for x in xs], [r[key] for r in compared], 0.4, label=name)
        right.bar_label(bars, fmt="%.2f", fontsize=7)
    right.set_xticks(list(xs), [f"{label(r)} (batch {r['batch_size']})\nvs {r['greedy_reference']}" for r in compared],
                     rotation=30, ha="right", fontsize=8)
    right.set_ylim(0, 1.1)
    right.set_ylabel("share equal to the reference")
    right.set_title("greedy agreement with the in-process fp32 reference")
    right.legend()
    right.grid(alpha=0.3, axis="y")
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: GSM8K train questions, zero-shot, with the calculator (smoke: the tiny
    random model, 4 questions of 2 short actions)."""
    if args.smoke:
        return {"policy": {"name": "tiny-random"},
                "task": {"name": "gsm8k", "limit": 4, "max_actions": 2, "few_shot": False},
                "sampling": {"max_new_tokens": 8}, "tools": {"names": ["calculator"]}}
    return {"policy": {"name": "smollm2-135m-instruct", "adapter": str(ROOT / "adapters" / "gsm8k_warmup")},
            "task": {"name": "gsm8k", "limit": 24, "max_actions": 4, "few_shot": False},
            "sampling": {"max_new_tokens": 64}, "tools": {"names": ["calculator"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generation_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(ARMS), metavar="ARM",
                        help=f"arms, <engine|vllm>_<fp32|bf16>[_lora] (default: {' '.join(ARMS)})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads, and the managed server's cores (0: every core this process may use)")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="the interpreter that starts the managed vLLM servers")
    parser.add_argument("--base-url", help="a running vLLM server for the vllm arms (no managed servers then)")
    parser.add_argument("--base-url-dtype", choices=list(DTYPES.values()), default="float32",
                        help="the dtype the --base-url server serves in (arms of another dtype are left out)")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--server-args", type=shlex.split, default=[], help="more arguments of the managed vLLM "
                        "servers, one string (engine.server_args), e.g. '--server-args=--tensor-parallel-size 2'")
    parser.add_argument("--quiet-load", type=float, default=1.0)
    parser.add_argument("--quiet-retries", type=int, default=3)
    parser.add_argument("--quiet-wait-s", type=float, default=180.0)
    parser.add_argument("--out", default=str(HERE / "results" / "generation.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="tiny random model, 4 questions, batch 1 and 4; with --base-url also vllm_fp32 (smollm2)")
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    shared = args.shared

    import torch

    workdir = Path(tempfile.mkdtemp(prefix="generation-bench-"))
    smoke_vllm: list[Arm] = []
    if args.smoke:
        args.batch_sizes = [1, 4]
        args.backends, args.quiet_retries = ["engine_fp32", "engine_bf16", "engine_fp32_lora"], 0
        args.threads = args.threads or 1
        shared.policy.adapter = random_adapter(shared.policy.name, workdir / "tiny-lora")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    threads = args.threads or len(cores)
    torch.set_num_threads(threads)
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:  # a managed server gets the same cores as the engine
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores[:threads]))

    arms = arms_to_run(args.backends, shared.policy.name, shared.policy.adapter)
    if args.base_url and not args.smoke:
        dropped = [a.name for a in arms if a.backend == "vllm" and a.dtype != args.base_url_dtype]
        if dropped:
            print(f"--base-url serves {args.base_url_dtype}: leaving out {' '.join(dropped)}", flush=True)
        arms = [a for a in arms if a.name not in dropped]
    if args.smoke and args.base_url:  # the real model on the given server, with its in-process reference
        smoke_vllm = [Arm(name, "smollm2-135m-instruct", None) for name in ("engine_fp32", "vllm_fp32")]

    quiet = wait_for_quiet(args)
    result = {"benchmark": "generation", "command": command_line(argv), "model": shared.policy.name,
              "machine": machine_info(), "quiet_check": quiet, "threads": threads,
              "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
              "questions": shared.task.limit, "max_actions": shared.task.max_actions,
              "max_new_tokens": shared.sampling.max_new_tokens,
              "batch_sizes": args.batch_sizes, "sampled_pass": {"temperature": 1.0, "seed": 0},
              "arms": [a.name for a in arms] + [f"{a.name} ({a.model})" for a in smoke_vllm],
              "servers": {}, "runs": []}
    servers = Servers(args, workdir)
    greedy_of: dict[tuple[str, str, int], dict] = {}
    try:
        plan = [(a, shared.task.limit, args.batch_sizes, shared.sampling.max_new_tokens) for a in arms]
        plan += [(a, 2, [2], 24) for a in smoke_vllm]
        for arm, questions, batch_sizes, max_new_tokens in plan:
            run_one(arm, questions, batch_sizes, max_new_tokens, args, servers, greedy_of, result)
    finally:
        servers.stop_all()
    result["servers"] = servers.records
    result["load_average_at_end"] = os.getloadavg()
    write_result(result, Path(args.out), plot)
    for r in result["runs"]:
        print(f"{r['arm']:>18} {r['model']:>22} batch {r['batch_size']:>3}: {r['tokens_per_second']:8.1f} tokens/s, "
              f"greedy agreement vs {r.get('greedy_reference')}: actions {r.get('greedy_action_agreement')}, "
              f"trajectories {r.get('greedy_trajectory_agreement')}")
    return 0


def run_one(arm: Arm, questions: int, batch_sizes: list[int], max_new_tokens: int, args, servers: Servers,
            greedy_of: dict, result: dict) -> None:
    """Run ``arm`` at each batch size and add its records (greedy agreement against its reference) to ``result``."""
    import gc

    from swirl_lightning.core.models import load_tokenizer
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings

    gc.collect()  # the previous arm's model
    if arm.backend == "engine":
        loaded = load_in_process(arm)
        server, server_record = None, None
    else:
        loaded = (None, load_tokenizer(arm.model))
        server, server_record = servers.get(arm)
    tokenizer = loaded[1]
    settings = RolloutSettings.for_task(args.shared.task, args.shared.tools, renderer=ChatRenderer(tokenizer),
                                        policy_name=arm.model + (f"+{arm.adapter}" if arm.adapter else ""))
    task = args.shared.task
    examples = load_task(task.name, task.split, questions, offset=task.offset, path=task.data_path)
    for batch_size in batch_sizes:
        record = run_arm(arm, loaded, server, settings, examples, batch_size, max_new_tokens)
        greedy = record.pop("_greedy")
        reference = greedy_of.get((arm.model, arm.reference, batch_size))
        if arm.name == arm.reference:
            greedy_of[(arm.model, arm.name, batch_size)] = greedy
            record["greedy_reference"] = None  # the reference itself
        elif reference is not None:
            record["greedy_reference"] = arm.reference
            record.update(agreement(reference, greedy))
        if server_record is not None:
            record["server_start_seconds"] = server_record["start_seconds"]
            record["server_managed"] = server_record["managed"]
        record["load_average_after"] = os.getloadavg()
        result["runs"].append(record)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
