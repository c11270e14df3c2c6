"""Online step-wise RL speed: swirl-lightning's ``swirl`` objective against TRL ``GRPOTrainer`` with each
state before an action as a prompt and the same judge as reward function; our actions sampled in process or on vLLM.

    python benchmarks/rl_speed_bench.py [--policy.name smollm2-135m-instruct] [--group-sizes 4 8] [--steps 4] [--states 4]
    python benchmarks/rl_speed_bench.py --sides ours_lora ours_vllm trl_lora [--lora-r 16]
                                        [--vllm-python .venv-vllm/bin/python [--vllm-dtype float32] | --base-url URL]
                                        --out benchmarks/results/rl_speed_vllm.json
    python benchmarks/rl_speed_bench.py --smoke      # tiny random model, a few steps (run by the test suite)
    python benchmarks/rl_speed_bench.py --smoke --sides ours_vllm --base-url URL   # SmolLM2 on that vLLM server

Sides (``--sides``, default ``ours trl``), each in its own subprocess:

- ``ours`` (``swirl-lightning``) and ``trl``: full fine-tuning, both sampling in process;
- ``ours_lora`` (``swirl-lightning (lora)``) and ``trl_lora`` (``trl (lora)``, TRL given the same LoRA as
  ``peft_config``): LoRA of rank ``--lora-r`` (alpha 2 r, every linear layer), sampling in process;
- ``ours_vllm`` (``swirl-lightning (vllm)``): ``ours_lora`` with ``engine.name vllm``: every action is sampled on a
  vLLM server, the adapter synced to it after every update (``engine.sync_every 1``: on-policy, like the others). The
  server is a managed one started from ``--vllm-python`` before this side, in ``--vllm-dtype`` (float32, the training
  dtype; its start time is recorded apart, not in the side's time; it is stopped after the side), or the one at
  ``--base-url`` (serving the model with ``--max-lora-rank`` at least ``--lora-r``). Its ``generation_seconds`` include
  the adapter syncs (saving the adapter and loading it on the server), also reported alone as
  ``adapter_sync_seconds``.

TRL has a vLLM mode too (``use_vllm=True``), but it needs CUDA: its server mode syncs weights through vLLM's NCCL
weight-transfer engine (a CUDA device), its colocate mode runs vLLM on the training GPUs. So TRL's sides generate in
process (transformers ``generate``) here; on a CPU the fair pairs are ``ours`` / ``trl`` and ``ours_lora`` /
``trl_lora``, with ``ours_vllm`` against ``trl_lora`` as what swapping our sampler for vLLM buys.

Data: the states of GSM8K reference trajectories (zero-shot prompt); reward: the reference-guided step judge (a
sampled calculator call is run and compared with the worked solution). Every side: AdamW lr 1e-5, no KL term, one
update per sampled batch, G sampled actions of at most ``--sampling.max_new_tokens`` tokens per state, temperature 1,
``--states`` states per step, ``--steps`` steps, fp32 (on CPU here). Reported: states/s and the split of the wall time
between generation, judging and the rest (log-probs, backward, optimizer), and sampled tokens per action. Needs the
``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    CHECKPOINTING,
    add_heap_argument,
    add_micro_batch_argument,
    add_side_options,
    command_line,
    heap_arguments,
    machine_info,
    micro_batch_arguments,
    micro_batch_option,
    parse_with_shared_groups,
    peak_memory_mb,
    run_side,
    set_up_side_heap,
    subplots,
    write_result,
)
from sft_speed_bench import write_trajectories  # noqa: E402

SIDES = {  # name: (subprocess side, LoRA, sampled on vLLM, label in the result)
    "ours": ("ours", False, False, "swirl-lightning"),
    "trl": ("trl", False, False, "trl"),
    "ours_lora": ("ours", True, False, "swirl-lightning (lora)"),
    "ours_vllm": ("ours", True, True, "swirl-lightning (vllm)"),
    "trl_lora": ("trl", True, False, "trl (lora)"),
}
PAIRS = (("swirl-lightning", "trl"), ("swirl-lightning (lora)", "trl (lora)"), ("swirl-lightning (vllm)", "trl (lora)"),
         ("swirl-lightning (vllm)", "swirl-lightning (lora)"))
"""The states/s ratios reported, when both sides ran."""
TRL_VLLM_NOTE = ("TRL's own vLLM mode (use_vllm=True) needs CUDA: server mode syncs weights through vLLM's NCCL "
                 "weight-transfer engine, colocate mode runs vLLM on the training GPUs; TRL's sides generate in "
                 "process (transformers generate) here")


class Timer:
    """Wraps a callable and adds the seconds spent in it to ``seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def run_ours(args) -> dict:
    import lightning.pytorch as L
    import torch

    from swirl_lightning.core.config import EngineConfig, JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig
    from swirl_lightning.training import weight_sync
    from swirl_lightning.training.config import (
        ExportConfig,
        LoraConfig,
        OptimizerConfig,
        TrainDataConfig,
        ValidationDataConfig,
    )
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule
    from swirl_lightning.training.objectives.swirl import SwirlConfig

    torch.manual_seed(0)
    task = TaskConfig(name="gsm8k", few_shot=False)
    data = SwirlDataModule(task=task, objective="swirl", tokenizer=args.model,
                           train=TrainDataConfig(path=args.data, batch_size=args.states, shuffle=False),
                           validation=ValidationDataConfig(split="validation", questions=1))
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.states * args.group_size)
    lora = LoraConfig(r=args.lora_r, alpha=2 * args.lora_r, target_modules="all-linear") if args.use_lora \
        else LoraConfig()
    engine = EngineConfig()
    if args.engine_url:  # the vLLM server the parent started (or --base-url)
        engine = EngineConfig(name="vllm", base_url=args.engine_url, max_lora_rank=max(lora.r, 1), sync_every=1)
    module = SwirlModule(policy=PolicyConfig(name=args.model), task=task, sampling=sampling, engine=engine,
                         judge=JudgeConfig("reference"), objective="swirl", export=ExportConfig(enabled=False),
                         lora=lora, swirl=SwirlConfig(group_size=args.group_size, kl_beta=0.0),
                         optimizer=OptimizerConfig(lr=1e-5),
                         gradient_checkpointing=CHECKPOINTING[args.gradient_checkpointing], **micro_batch_option(args))
    publish = Timer(weight_sync.AdapterSync.publish)  # the adapter syncs to the server (inside generation_seconds)
    weight_sync.AdapterSync.publish = lambda self, lm, version: publish(self, lm, version)
    # The objective's sampler and judging, timed where the objective calls them.
    from swirl_lightning.training.objectives import swirl as swirl_objective
    from swirl_lightning.training.trained_policy import TrainedPolicy

    sampled_tokens: list[int] = []
    sample, score = Timer(TrainedPolicy.sample), Timer(swirl_objective.judged_rewards)

    def counted_sample(*sample_args):
        groups, version = sample(*sample_args)
        sampled_tokens.extend(len(ids) for group in groups for ids, _ in group)
        return groups, version

    TrainedPolicy.sample, swirl_objective.judged_rewards = counted_sample, score
    trainer = L.Trainer(max_steps=args.steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=tempfile.mkdtemp(prefix="rl-bench-ours-"))
    data.setup("fit")
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - started
    result = {"wall_seconds": wall, "states": args.steps * args.states, "generation_seconds": sample.seconds,
              "judging_seconds": score.seconds, "sampled_tokens": sampled_tokens,
              "engine": engine.name, "lora_r": lora.r, "trainable_parameters": sum(
                  p.numel() for p in module.parameters() if p.requires_grad)}
    if engine.name == "vllm":
        result.update(adapter_sync_seconds=publish.seconds, adapter_syncs=publish.calls,
                      engine_base_url=engine.base_url)
    return result


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.core.tools import collect_tools, tool_tags
    from swirl_lightning.core.trajectory import State, Step, decompose, parse_action, read_trajectories
    from swirl_lightning.judging.reference import ReferenceJudge

    torch.manual_seed(0)
    examples = {e.id: e for e in load_task("gsm8k", "train")}
    rows = []
    for trajectory in read_trajectories(args.data):
        for state, _ in decompose(trajectory):
            rows.append({"prompt": state.messages, "example_id": trajectory.example_id})
    rows = rows[: args.steps * args.states]
    judge = ReferenceJudge()
    tags = tool_tags(collect_tools())
    sampled_tokens: list[int] = []
    tokenizer = load_tokenizer(args.model)

    def reference_reward(prompts, completions, example_id, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        sampled_tokens.extend(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
        items = [(State(i, 0, prompt, example=examples[i]), Step(text=text, action=parse_action(text, tags)))
                 for prompt, text, i in zip(prompts, texts, example_id)]
        return [j.score for j in judge.judge_steps(items)]

    reward = Timer(reference_reward)
    reward.__name__ = "reference_reward"
    cuda = torch.cuda.is_available()
    model = load_model(args.model, dtype="float32", device="cuda" if cuda else "cpu")
    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-grpo-bench-"), learning_rate=1e-5,
                        per_device_train_batch_size=args.states * args.group_size, num_generations=args.group_size,
                        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, beta=0.0,
                        num_iterations=1, scale_rewards="none", max_steps=args.steps, lr_scheduler_type="constant",
                        logging_steps=1, report_to=[], save_strategy="no", use_cpu=not cuda, seed=0,
                        disable_tqdm=True, shuffle_dataset=False)
    peft_config = None
    if args.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=peft_config)
    generate = Timer(trainer.model.generate)
    trainer.model.generate = generate
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {"trl_version": __import__("trl").__version__, "wall_seconds": wall,
            "states": args.steps * args.states, "generation_seconds": generate.seconds, "generate_calls": generate.calls,
            "judging_seconds": reward.seconds, "sampled_tokens": sampled_tokens, "engine": "in_process (generate)",
            "lora_r": args.lora_r if args.use_lora else 0,
            "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}


def run_one_side(args) -> int:
    import torch

    heap = set_up_side_heap(args.side, args.mmap_threshold_mib)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"side": args.side_label, **(run_ours(args) if args.side == "ours" else run_trl(args)), "heap": heap}
    tokens = result.pop("sampled_tokens")
    result["group_size"] = args.group_size
    result["states_per_second"] = result["states"] / result["wall_seconds"]
    result["sampled_actions"] = len(tokens)
    result["tokens_per_action"] = sum(tokens) / max(len(tokens), 1)
    result["update_seconds"] = result["wall_seconds"] - result["generation_seconds"] - result["judging_seconds"]
    result["peak_memory_mb"] = peak_memory_mb()
    Path(args.result).write_text(json.dumps(result))
    return 0


def plot(result: dict):  # the figure write_result saves
    runs = result["runs"]
    fig, ax = subplots(figsize=(max(8, 1.6 * len(runs)), 4.5))
    labels = [f"{r['side']}\nG={r['group_size']}".replace(" (", "\n(") for r in runs]
    bottom = [0.0] * len(runs)
    for part, color in (("generation_seconds", "tab:blue"), ("judging_seconds", "tab:green"),
                        ("update_seconds", "tab:orange")):
        values = [r[part] / r["states"] for r in runs]
        ax.bar(labels, values, bottom=bottom, color=color, label=part.replace("_seconds", ""))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("seconds per state")
    ax.set_title(f"{result['model']}: online step-wise RL, {result['states_per_step']} states x G per step")
    ax.legend()
    return fig


def start_server(args, workdir: Path) -> tuple[object, dict]:
    """A managed vLLM server for the ``ours_vllm`` side (``--vllm-dtype``, LoRA up to ``--lora-r``), and its record."""
    from swirl_lightning.core.config import EngineConfig, PolicyConfig
    from swirl_lightning.rollout.vllm_server import VllmServer

    engine = EngineConfig(name="vllm", python=args.vllm_python, dtype=args.vllm_dtype, kv_cache_gib=args.kv_cache_gib,
                          max_lora_rank=max(16, args.lora_r), server_args=list(args.server_args))
    log = workdir / "vllm.log"
    print(f"starting a vLLM server (log {log})", flush=True)
    started = time.perf_counter()
    server = VllmServer.start(engine, PolicyConfig(args.model), log, max_context_tokens=4096)
    return server, {"managed": True, "dtype": args.vllm_dtype, "start_seconds": round(time.perf_counter() - started, 2),
                    "log": str(log), "max_lora_rank": engine.max_lora_rank, "server_args": list(args.server_args)}


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: SmolLM2-135M-Instruct, actions of at most 64 tokens (smoke: the tiny random
    model, 8 tokens; SmolLM2 when a vLLM server is a side, since the server serves a real model)."""
    if args.smoke:
        model = "smollm2-135m-instruct" if "ours_vllm" in args.sides else "tiny-random"
        return {"policy": {"name": model}, "sampling": {"max_new_tokens": 8}}
    return {"policy": {"name": "smollm2-135m-instruct"}, "sampling": {"max_new_tokens": 64}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl_speed_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=["ours", "trl"],
                        help="which sides run (default: ours trl, full fine-tuning)")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--states", type=int, default=4, help="states per step")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank of the _lora and _vllm sides")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    parser.add_argument("--gradient-checkpointing", choices=list(CHECKPOINTING), default="auto",
                        help="our sides' model.gradient_checkpointing (TRL's GRPOConfig default: on)")
    add_micro_batch_argument(parser)
    add_heap_argument(parser)
    parser.add_argument("--vllm-python", default=str(HERE.parent / ".venv-vllm" / "bin" / "python"),
                        help="the interpreter that starts the managed vLLM server of ours_vllm")
    parser.add_argument("--base-url", help="a running vLLM server for ours_vllm (float32, LoRA up to --lora-r)")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--server-args", type=shlex.split, default=[], help="more arguments of the managed vLLM "
                        "server, one string (engine.server_args), e.g. '--server-args=--tensor-parallel-size 2'")
    parser.add_argument("--vllm-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights of the managed vLLM server (training stays float32)")
    parser.add_argument("--out", default=str(HERE / "results" / "rl_speed.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 steps of 2 states, G=2 (SmolLM2 "
                        "and LoRA rank 8 when ours_vllm is a side)")
    add_side_options(parser)
    parser.add_argument("--group-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--side-label", help=argparse.SUPPRESS)
    parser.add_argument("--use-lora", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine-url", help=argparse.SUPPRESS)
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    # The policy (--policy.name) and the action length (--sampling.max_new_tokens) are the shared groups'.
    args.model, args.max_new_tokens = args.shared.policy.name, args.shared.sampling.max_new_tokens
    if args.side:
        return run_one_side(args)
    if args.smoke:
        args.group_sizes, args.steps, args.states = [2], 2, 2
        if "ours_vllm" in args.sides:  # the server serves a real model (the test's: SmolLM2, LoRA up to rank 8)
            args.lora_r = min(args.lora_r, 8)
    sides = list(dict.fromkeys(args.sides))

    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    data = workdir / "trajectories.jsonl"
    data_info = write_trajectories(data, args.steps * args.states, 1)  # at least as many states as needed
    result = {"benchmark": "rl_speed", "command": command_line(argv), "model": args.model,
              "machine": machine_info(), "data": data_info, "states_per_step": args.states, "steps": args.steps,
              "max_new_tokens": args.max_new_tokens, "sides": sides,
              "gradient_checkpointing": {"ours": args.gradient_checkpointing, "trl": "GRPOConfig's default (on)"},
              "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "target_modules": "all-linear"}
              if any(SIDES[s][1] for s in sides) else None,
              "trl_vllm": TRL_VLLM_NOTE, "vllm_server": None, "runs": []}
    for side in sides:
        name, lora, on_vllm, label = SIDES[side]
        server = None
        try:
            engine_url = None
            if on_vllm:
                if args.base_url:
                    engine_url = args.base_url
                    result["vllm_server"] = {"managed": False, "base_url": args.base_url}
                else:
                    server, result["vllm_server"] = start_server(args, workdir)
                    engine_url = server.base_url
            for group_size in args.group_sizes:
                arguments = ["--side", name, "--side-label", label, "--group-size", str(group_size),
                             "--data", str(data), "--policy.name", args.model, "--steps", str(args.steps),
                             "--states", str(args.states), "--sampling.max_new_tokens", str(args.max_new_tokens),
                             "--threads", str(args.threads), "--lora-r", str(args.lora_r),
                             "--gradient-checkpointing", args.gradient_checkpointing, *micro_batch_arguments(args),
                             *heap_arguments(args)]
                arguments += ["--use-lora"] if lora else []
                arguments += ["--engine-url", engine_url] if engine_url else []
                run = run_side(__file__, arguments, workdir / f"{side}-{group_size}.json", f"{label} (G={group_size})")
                run["load_average_after"] = os.getloadavg()
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
        finally:
            if server is not None:
                server.stop()
    speedups: dict[str, dict[str, float]] = {}
    for group_size in args.group_sizes:
        by_side = {r["side"]: r for r in result["runs"] if r["group_size"] == group_size}
        for ours, theirs in PAIRS:
            if ours in by_side and theirs in by_side:
                speedups.setdefault(f"{ours} / {theirs}", {})[str(group_size)] = round(
                    by_side[ours]["states_per_second"] / by_side[theirs]["states_per_second"], 2)
    result["speedup_states_per_second"] = speedups
    full = speedups.get("swirl-lightning / trl")
    if full:
        result["goal"] = "at least 3x TRL's states/s (full fine-tuning)"
        result["goal_met"] = all(v >= 3 for v in full.values())
    out = Path(args.out)
    write_result(result, out, plot)
    print(f"states/s ratios by G: {speedups}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
