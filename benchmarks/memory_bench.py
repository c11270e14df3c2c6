"""Memory profile: peak RSS and the largest allocations of a ``swirl`` fit, an ``sft`` fit and a live validation.

    python benchmarks/memory_bench.py [--workloads swirl sft validate] [--states 8] [--group-size 4]
                                      [--validation-questions 500] [--out benchmarks/results/memory.json]
    python benchmarks/memory_bench.py --smoke          # tiny random model, a few seconds (run by the test suite)

Each workload runs in its own subprocess (so its peak RSS is its own) on SmolLM2-135M-Instruct in float32:

- ``swirl``: ``swirl fit`` steps with the ``swirl`` objective, as ``rl_speed_bench.py`` runs them (GSM8K reference
  trajectories' states, the reference judge, full fine-tuning, AdamW), ``--states`` states x G = ``--group-size``
  actions of at most ``--sampling.max_new_tokens`` tokens per step, ``--steps`` steps;
- ``sft``: one ``sft`` epoch of ``--sft-trajectories`` reference trajectories, batch 4, as ``sft_speed_bench.py``;
- ``validate``: live rollouts of ``--validation-questions`` GSM8K validation questions (zero-shot prompt, calculator,
  actions of at most ``--validation-max-new-tokens`` tokens) at batch ``--validation-batch``, greedy, on the in-process
  engine as ``swirl validate`` runs them; reports the KV cache's largest size and the accuracy too. A killed validation
  resumes where it stopped (``--validation-progress``): its peak is the largest of its runs', each of which had all
  slots busy. ``--sampling.kv_cache_dtype bfloat16`` stores its keys and values (and the swirl actions') in bfloat16.

Reported per workload: peak RSS (``ru_maxrss``), the RSS once the model is loaded, wall seconds, and, for the training
workloads, the ten operators that allocated the most memory during the last step (``torch.profiler`` with
``profile_memory``) with their shapes. The profiler's records take memory of their own, so a training workload's peak
is read before its last step starts (``peak_rss_with_profiled_step_mb`` has the rest). The heap is set up as ``swirl``
sets it (``swirl_lightning.core.memory``) unless ``--glibc-default-heap``. The git commit is recorded: run it before
and after a change (``--gradient-checkpointing`` and ``--glibc-default-heap`` take the changes apart).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    CHECKPOINTING,
    add_micro_batch_argument,
    command_line,
    machine_info,
    micro_batch_arguments,
    micro_batch_option,
    parse_with_shared_groups,
    peak_rss_mb,
    run_side,
    subplots,
    write_result,
)
from sft_speed_bench import write_trajectories  # noqa: E402

WORKLOADS = ("swirl", "sft", "validate")


def rss_mb() -> float:
    """Resident set size of this process now (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def top_allocations(profiler, count: int = 10) -> list[dict]:
    """The operators that allocated the most CPU memory (their own allocations, not their children's), with shapes."""
    rows = []
    for event in profiler.key_averages(group_by_input_shape=True):
        if event.self_cpu_memory_usage > 0:
            rows.append({"op": event.key, "self_allocated_mb": round(event.self_cpu_memory_usage / 2**20, 1),
                         "calls": event.count, "input_shapes": str(event.input_shapes)[:160]})
    rows.sort(key=lambda row: -row["self_allocated_mb"])
    return rows[:count]


class ProfileLastStep:
    """A Lightning callback that profiles the memory of the last training step."""

    def __new__(cls, last_step: int):
        import lightning.pytorch as L
        from torch.profiler import ProfilerActivity, profile

        class _Profile(L.Callback):
            def __init__(self):
                self.profiler, self.top, self.peak_before = None, [], None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == last_step:
                    self.peak_before = peak_rss_mb()  # the profiler's own records would count in the peak
                    self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                            record_shapes=True)
                    self.profiler.__enter__()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if self.profiler is not None:
                    self.profiler.__exit__(None, None, None)
                    self.top = top_allocations(self.profiler)
                    self.profiler = None

        return _Profile()


def fit(module, data, steps: int, max_epochs: int | None = None, profiled: bool = True) -> dict:
    """Train ``steps`` steps; the last one profiled unless ``profiled`` is false (then every step counts in the
    peak)."""
    import lightning.pytorch as L

    profile = ProfileLastStep(max(steps - 1, 0)) if profiled else None
    trainer = L.Trainer(max_steps=steps if max_epochs is None else -1, max_epochs=max_epochs, accelerator="cpu",
                        devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=tempfile.mkdtemp(prefix="memory-bench-"), callbacks=[profile] if profile else [])
    data.setup("fit")
    module.configure_model()
    loaded = rss_mb()
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    result = {"rss_after_load_mb": round(loaded, 1), "wall_seconds": round(time.perf_counter() - started, 1)}
    if profile is None:
        return {**result, "peak_rss_mb": round(peak_rss_mb(), 1), "profiled": False}
    return {**result, "peak_rss_mb": round(profile.peak_before, 1),
            "peak_rss_with_profiled_step_mb": round(peak_rss_mb(), 1), "top_allocations_last_step": profile.top}


def checkpointing(args) -> dict:
    """``SwirlModule``'s ``gradient_checkpointing`` as asked, or its default (also for code older than ``auto``)."""
    if args.gradient_checkpointing == "default":
        return {}
    return {"gradient_checkpointing": CHECKPOINTING[args.gradient_checkpointing]}


def run_swirl(args) -> dict:
    from swirl_lightning.core.config import JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig
    from swirl_lightning.training.config import ExportConfig, OptimizerConfig, TrainDataConfig, ValidationDataConfig
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule
    from swirl_lightning.training.objectives.swirl import SwirlConfig

    task = TaskConfig(name="gsm8k", few_shot=False)
    data = SwirlDataModule(task=task, objective="swirl", tokenizer=args.model,
                           train=TrainDataConfig(path=args.data, batch_size=args.states, shuffle=False),
                           validation=ValidationDataConfig(split="validation", questions=1))
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens,
                              batch_size=args.states * args.group_size, kv_cache_dtype=args.kv_cache_dtype)
    module = SwirlModule(policy=PolicyConfig(name=args.model), task=task, sampling=sampling,
                         judge=JudgeConfig("reference"), objective="swirl", export=ExportConfig(enabled=False),
                         **checkpointing(args), **micro_batch_option(args),
                         swirl=SwirlConfig(group_size=args.group_size, kl_beta=0.0), optimizer=OptimizerConfig(lr=1e-5))
    return {"states_per_step": args.states, "group_size": args.group_size, "steps": args.steps,
            **fit(module, data, args.steps, profiled=args.profile)}


def run_sft(args) -> dict:
    from swirl_lightning.core.config import PolicyConfig, TaskConfig
    from swirl_lightning.training.config import ExportConfig, OptimizerConfig, TrainDataConfig, ValidationDataConfig
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule

    task = TaskConfig(name="gsm8k", few_shot=False)
    data = SwirlDataModule(task=task, objective="sft", tokenizer=args.model,
                           train=TrainDataConfig(path=args.data, batch_size=4, max_length=2048),
                           validation=ValidationDataConfig(split="validation", questions=1))
    module = SwirlModule(policy=PolicyConfig(name=args.model), objective="sft", task=task,
                         export=ExportConfig(enabled=False), optimizer=OptimizerConfig(lr=1e-5, max_grad_norm=1.0),
                         **checkpointing(args), **micro_batch_option(args))
    steps = -(-args.sft_trajectories // 4)
    return {"trajectories": args.sft_trajectories, "batch_size": 4,
            **fit(module, data, steps, max_epochs=1, profiled=args.profile)}


def _conversation_tokens(trajectory) -> int:
    return len(trajectory.prompt_token_ids or []) + sum(len(s.token_ids or []) + len(s.observation_token_ids or [])
                                                        for s in trajectory.steps)


def _validation_progress(path: Path, settings: dict) -> list[dict]:
    """The finished conversations an interrupted validate workload recorded in ``path``: ``[]`` when it has none.
    A file of other settings is an error (its peaks would not be this run's)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        if record.get("settings") not in (None, settings):
            raise SystemExit(f"{path}: progress of a validation with other settings ({record['settings']}); delete it "
                             f"to start over")
    return [record for record in records if "question" in record]


def run_validate(args) -> dict:
    from swirl_lightning.core.config import SamplingConfig, TaskConfig, ToolsConfig
    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.rollout import engine as engine_module
    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings, conversations

    largest = {"bytes": 0}
    original_update = engine_module.SlotKVCache.update

    def measured_update(self, *update_args, **kwargs):  # the cache's size, as it grows
        result = original_update(self, *update_args, **kwargs)
        largest["bytes"] = max(largest["bytes"], self.nbytes())
        return result

    engine_module.SlotKVCache.update = measured_update
    # A killed run resumes: each finished conversation is appended to the progress file with this process's peaks
    # so far, and the next run rolls out only the questions it lacks (the peak reported is the largest of the runs').
    progress = Path(args.validation_progress)
    settings = {"model": args.model, "questions": args.validation_questions, "batch": args.validation_batch,
                "max_new_tokens": args.validation_max_new_tokens, "glibc_default_heap": args.glibc_default_heap,
                "kv_cache_dtype": args.kv_cache_dtype}
    done = _validation_progress(progress, settings)
    segment = 1 + max((record["segment"] for record in done), default=0)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32", device="cpu").eval()
    loaded = rss_mb()
    settings_for = RolloutSettings.for_task(TaskConfig("gsm8k", few_shot=False), ToolsConfig(names=["calculator"]),
                                            renderer=ChatRenderer(tokenizer), policy_name=args.model)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.validation_max_new_tokens,
                              batch_size=args.validation_batch, kv_cache_dtype=args.kv_cache_dtype)
    examples = load_task("gsm8k", "validation", args.validation_questions)
    finished_ids = {record["question"] for record in done}
    remaining = [example for example in examples if example.id not in finished_ids]
    engine = engine_module.GenerationEngine(model, tokenizer, sampling, stop_strings=settings_for.stop_strings)
    started = time.perf_counter()
    progress.parent.mkdir(parents=True, exist_ok=True)
    with progress.open("a") as log:
        print(json.dumps({"segment": segment, "settings": settings, "commit": args.commit}), file=log, flush=True)

        def record(conversation) -> None:
            trajectory = conversation.trajectory
            done.append({"segment": segment, "question": trajectory.example_id, "outcome": trajectory.outcome,
                         "tokens": _conversation_tokens(trajectory), "peak_rss_mb": round(peak_rss_mb(), 1),
                         "largest_kv_cache_mb": round(largest["bytes"] / 2**20, 1),
                         "seconds": round(time.perf_counter() - started, 1), "rss_after_load_mb": round(loaded, 1)})
            print(json.dumps(done[-1]), file=log, flush=True)

        engine.run(conversations(remaining, 1, settings_for), record)
    segments = {}
    for entry in done:  # each run's last record holds its peaks and seconds
        segments[entry["segment"]] = entry
    lengths = sorted(entry["tokens"] for entry in done)
    commits = [json.loads(line).get("commit") for line in progress.read_text().splitlines() if '"settings"' in line]
    progress.unlink()  # finished: the result holds it all
    outcomes = [entry["outcome"] for entry in done if entry.get("outcome") is not None]
    return {"questions": len(examples), "batch_size": args.validation_batch, "kv_cache_dtype": args.kv_cache_dtype,
            "accuracy": round(sum(outcomes) / len(outcomes), 4) if outcomes else None,
            "rss_after_load_mb": round(loaded, 1),
            "wall_seconds": round(sum(entry["seconds"] for entry in segments.values()), 1),
            "largest_kv_cache_mb": max(entry["largest_kv_cache_mb"] for entry in segments.values()),
            "peak_rss_mb": max(entry["peak_rss_mb"] for entry in segments.values()),
            "runs": len(segments), "commits_of_runs": commits,
            "conversation_tokens": {"median": lengths[len(lengths) // 2], "max": lengths[-1]}}


def run_one(args) -> int:
    import torch

    heap = "glibc default"
    if not args.glibc_default_heap:
        from swirl_lightning.core import memory

        if hasattr(memory, "set_up_heap"):
            heap = f"{memory.set_up_heap()} (as swirl sets it)"
        elif memory.return_freed_memory_to_os():  # code from before huge pages
            heap = "freed blocks of 1 MiB or more returned (as swirl sets it)"
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"workload": args.workload, "heap": heap, "gradient_checkpointing": args.gradient_checkpointing,
              "micro_batch_tokens": "default" if args.micro_batch_tokens is None else args.micro_batch_tokens,
              **{"swirl": run_swirl, "sft": run_sft, "validate": run_validate}[args.workload](args)}
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    Path(args.result).write_text(json.dumps(result))
    return 0


def plot(result: dict):  # the figure write_result saves
    runs = result["runs"]
    fig, ax = subplots(figsize=(7, 4))
    labels = [run["workload"] for run in runs]
    ax.bar(labels, [run["peak_rss_mb"] / 1024 for run in runs], color="tab:purple", label="peak RSS")
    ax.bar(labels, [run["rss_after_load_mb"] / 1024 for run in runs], color="tab:gray", label="after loading")
    ax.set_ylabel("GB")
    ax.set_title(f"{result['model']}: peak memory (commit {result['commit']})")
    ax.legend()
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: SmolLM2-135M-Instruct, ``swirl`` actions of at most 64 tokens (smoke: the
    tiny random model, 8 tokens)."""
    if args.smoke:
        return {"policy": {"name": "tiny-random"}, "sampling": {"max_new_tokens": 8}}
    return {"policy": {"name": "smollm2-135m-instruct"}, "sampling": {"max_new_tokens": 64}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memory_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--states", type=int, default=8, help="swirl: states per step")
    parser.add_argument("--group-size", type=int, default=4, help="swirl: actions per state (G)")
    parser.add_argument("--steps", type=int, default=3, help="swirl: optimizer steps (the last is profiled and not "
                        "counted in the peak)")
    parser.add_argument("--sft-trajectories", type=int, default=16)
    parser.add_argument("--validation-questions", type=int, default=500)
    parser.add_argument("--validation-batch", type=int, default=32)
    parser.add_argument("--validation-max-new-tokens", type=int, default=128, help="validate: tokens per action "
                        "(conf/gsm8k_calculator.yaml's model.evaluation.sampling)")
    parser.add_argument("--gradient-checkpointing", choices=["default", "auto", "true", "false"], default="default",
                        help="the training workloads' model.gradient_checkpointing (default: SwirlModule's)")
    add_micro_batch_argument(parser)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="profile the training workloads' last step (not counted in the peak); --no-profile: "
                        "no profiler, every step counts (the profiler's records of a step can take gigabytes)")
    parser.add_argument("--glibc-default-heap", action="store_true", help="leave glibc's malloc and PyTorch's pages "
                        "as they are (swirl returns freed blocks of 1 MiB or more to the OS and backs tensors of 2 MiB "
                        "or more with huge pages: swirl_lightning.core.memory)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per workload (0: torch's default)")
    parser.add_argument("--out", default=str(HERE / "results" / "memory.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, small workloads")
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--commit", help=argparse.SUPPRESS)
    parser.add_argument("--validation-progress", default="runs/memory_bench/validate-progress.jsonl",
                        help="validate: finished conversations, so that a killed run resumes (deleted when it ends)")
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    # The policy (--policy.name) and the swirl actions' length (--sampling.max_new_tokens) are the shared groups'.
    args.model, args.max_new_tokens = args.shared.policy.name, args.shared.sampling.max_new_tokens
    args.kv_cache_dtype = args.shared.sampling.kv_cache_dtype  # the validation's (greedy) sampling takes it too
    if args.workload:
        return run_one(args)
    if args.smoke:
        args.states, args.group_size, args.steps = 2, 2, 2
        args.sft_trajectories, args.validation_questions, args.validation_batch = 4, 4, 4
    workdir = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    args.validation_progress = str(workdir / "validate-progress.jsonl" if args.smoke
                                   else Path(args.validation_progress).resolve())
    data = workdir / "trajectories.jsonl"
    data_info = write_trajectories(data, max(args.states * args.steps, args.sft_trajectories), 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "../swirl_lightning"], cwd=HERE, capture_output=True,
                           text=True).stdout
    result = {"benchmark": "memory", "command": command_line(argv), "model": args.model, "machine": machine_info(),
              "commit": commit.strip() + ("+changes" if dirty.strip() else ""), "data": data_info, "runs": []}
    for workload in args.workloads:
        arguments = ["--workload", workload, "--data", str(data), "--policy.name", args.model, "--states", str(args.states),
                     "--group-size", str(args.group_size), "--steps", str(args.steps),
                     "--sampling.max_new_tokens", str(args.max_new_tokens),
                     "--sampling.kv_cache_dtype", args.kv_cache_dtype, "--sft-trajectories", str(args.sft_trajectories),
                     "--validation-questions", str(args.validation_questions),
                     "--validation-batch", str(args.validation_batch),
                     "--validation-max-new-tokens", str(args.validation_max_new_tokens), "--threads", str(args.threads),
                     "--gradient-checkpointing", args.gradient_checkpointing, *micro_batch_arguments(args),
                     "--profile" if args.profile else "--no-profile",
                     "--validation-progress", args.validation_progress, "--commit", result["commit"],
                     *(["--glibc-default-heap"] if args.glibc_default_heap else [])]
        run = run_side(__file__, arguments, workdir / f"{workload}.json", workload)
        result["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "top_allocations_last_step"}), flush=True)
    write_result(result, Path(args.out), plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
