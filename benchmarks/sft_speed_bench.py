"""Offline/SFT training speed: swirl-lightning (one pass per trajectory) against TRL ``SFTTrainer`` (one sample per
sub-trajectory, completion-only loss), same data, model, batch size, sequence budget, optimizer and precision.

    python benchmarks/sft_speed_bench.py [--policy.name smollm2-135m-instruct] [--trajectories 16] [--batch-size 4]
    python benchmarks/sft_speed_bench.py --smoke      # tiny random model, a few trajectories (run by the test suite)

Data: GSM8K reference trajectories (worked solutions as calculator steps) with at least ``--min-steps`` steps,
zero-shot prompt. Each side trains one epoch in its own subprocess (so peak memory is its own) with full
fine-tuning, AdamW (lr 1e-5, gradient norm clipped at 1), fp32 on CPU (bf16 on a GPU that has it), batch
``--batch-size``: trajectories for swirl-lightning, decomposed samples for TRL (as a TRL user would batch them).
Reported per side: seconds per epoch, real (non-pad) tokens processed per second, peak memory, and the loss curve;
the JSON and PNG go to ``benchmarks/results/``. Needs the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
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


def write_trajectories(path: Path, count: int, min_steps: int) -> dict:
    """The first ``count`` GSM8K train reference trajectories with at least ``min_steps`` steps."""
    from swirl_lightning.core.config import TaskConfig, ToolsConfig
    from swirl_lightning.core.tasks import get_task, load_task
    from swirl_lightning.core.trajectory import write_jsonl
    from swirl_lightning.rollout.conversation import RolloutSettings

    settings = RolloutSettings.for_task(TaskConfig("gsm8k", few_shot=False), ToolsConfig(names=["calculator"]))
    tags = {tool.name: tool.tag for tool in settings.tools.values()}
    task = get_task("gsm8k")
    chosen = []
    for example in load_task("gsm8k", "train"):
        trajectory = task.reference_trajectory(example, settings.prompt(example.question), tags)
        if len(trajectory.steps) >= min_steps:
            chosen.append(trajectory)
        if len(chosen) == count:
            break
    write_jsonl(path, chosen)
    return {"trajectories": len(chosen), "steps_mean": sum(len(t.steps) for t in chosen) / len(chosen)}


def run_ours(args) -> dict:
    import lightning.pytorch as L
    import torch

    from swirl_lightning.core.config import PolicyConfig, TaskConfig
    from swirl_lightning.training.config import ExportConfig, OptimizerConfig, TrainDataConfig, ValidationDataConfig
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule

    torch.manual_seed(0)
    task = TaskConfig(name="gsm8k", few_shot=False)
    data = SwirlDataModule(task=task, objective="sft", tokenizer=args.model,
                           train=TrainDataConfig(path=args.data, batch_size=args.batch_size, max_length=args.max_length),
                           validation=ValidationDataConfig(split="validation", questions=1))
    module = SwirlModule(policy=PolicyConfig(name=args.model), objective="sft", task=task,
                         export=ExportConfig(enabled=False), optimizer=OptimizerConfig(lr=1e-5, max_grad_norm=1.0),
                         gradient_checkpointing=CHECKPOINTING[args.gradient_checkpointing], **micro_batch_option(args))
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    cuda = torch.cuda.is_available()
    trainer = L.Trainer(max_epochs=1, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, precision="bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true",
                        callbacks=[Record()])
    data.setup("fit")
    real_tokens = sum(len(row.input_ids) for row in data.train_items)
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - started
    return {"side": "swirl-lightning", "rows": len(data.train_items), "real_tokens": real_tokens,
            "micro_batch_tokens": module.micro_batch_tokens, "epoch_seconds": seconds, "losses": losses}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.core.trajectory import read_trajectories

    torch.manual_seed(0)
    rows = []
    for trajectory in read_trajectories(args.data):
        for k, step in enumerate(trajectory.steps):
            rows.append({"prompt": trajectory.messages(upto_step=k),
                         "completion": [{"role": "assistant", "content": step.text}]})
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32", device="cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.cuda.is_available()
    config = SFTConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=args.batch_size,
                       num_train_epochs=1, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
                       optim="adamw_torch", max_grad_norm=1.0, max_length=args.max_length, completion_only_loss=True,
                       logging_steps=1, report_to=[], save_strategy="no", use_cpu=not cuda,
                       bf16=cuda and torch.cuda.is_bf16_supported(), seed=0, dataloader_num_workers=0,
                       disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    real_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"side": "trl", "trl_version": __import__("trl").__version__, "rows": len(rows),
            "real_tokens": real_tokens, "epoch_seconds": seconds, "losses": losses}


def run_one_side(args) -> int:
    import torch

    heap = set_up_side_heap(args.side, args.mmap_threshold_mib)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_ours(args) if args.side == "ours" else run_trl(args)
    result["heap"] = heap
    result["real_tokens_per_second"] = result["real_tokens"] / result["epoch_seconds"]
    result["peak_memory_mb"] = peak_memory_mb()
    Path(args.result).write_text(json.dumps(result))
    return 0


def plot(result: dict):  # the figure write_result saves
    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    sides = result["sides"]
    names = [s["side"] for s in sides]
    left.bar(names, [s["epoch_seconds"] for s in sides], color=["tab:blue", "tab:orange"])
    left.set_ylabel("seconds per epoch")
    left.set_title(f"{result['model']}: {result['data']['trajectories']} trajectories, "
                   f"{result['data']['steps_mean']:.1f} steps each")
    for side in sides:
        losses = side["losses"]
        right.plot([(i + 1) / len(losses) for i in range(len(losses))], losses, marker=".", label=side["side"])
    right.set_xlabel("fraction of the epoch")
    right.set_ylabel("training loss (mean NLL per action token)")
    right.legend()
    right.grid(alpha=0.3)
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: SmolLM2-135M-Instruct (smoke: the tiny random model)."""
    return {"policy": {"name": "tiny-random" if args.smoke else "smollm2-135m-instruct"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sft_speed_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--min-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    parser.add_argument("--sides", nargs="+", choices=["ours", "trl"], default=["ours", "trl"])
    parser.add_argument("--gradient-checkpointing", choices=list(CHECKPOINTING), default="auto",
                        help="our side's model.gradient_checkpointing (TRL's SFTConfig default: on)")
    add_micro_batch_argument(parser)
    add_heap_argument(parser)
    parser.add_argument("--out", default=str(HERE / "results" / "sft_speed.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 4 trajectories")
    add_side_options(parser)
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    args.model = args.shared.policy.name  # --policy.name, as every swirl command spells it
    if args.side:
        return run_one_side(args)
    if args.smoke:
        args.trajectories = 4

    workdir = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    data = workdir / "trajectories.jsonl"
    data_info = write_trajectories(data, args.trajectories, args.min_steps)
    result = {"benchmark": "sft_speed", "command": " ".join([sys.executable, *sys.argv]), "model": args.model,
              "machine": machine_info(), "data": data_info, "batch_size": args.batch_size,
              "max_length": args.max_length, "optimizer": "AdamW lr 1e-5, full fine-tuning",
              "gradient_checkpointing": {"ours": args.gradient_checkpointing, "trl": "SFTConfig's default (on)"},
              "sides": []}
    for side in [name for name in ("ours", "trl") if name in args.sides]:
        side_result = run_side(__file__, ["--side", side, "--data", str(data), "--policy.name", args.model,
                                          "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                                          "--threads", str(args.threads),
                                          "--gradient-checkpointing", args.gradient_checkpointing,
                                          *micro_batch_arguments(args), *heap_arguments(args)],
                                 workdir / f"{side}.json", side)
        result["sides"].append(side_result)
        print(json.dumps({k: v for k, v in side_result.items() if k != "losses"}), flush=True)
    if len(result["sides"]) < 2:  # one side alone: its figures only
        write_result(result, Path(args.out), plot)
        return 0
    ours, trl = result["sides"]
    result["speedup_epoch"] = round(trl["epoch_seconds"] / ours["epoch_seconds"], 2)
    result["token_ratio"] = round(trl["real_tokens"] / ours["real_tokens"], 2)
    result["peak_memory_ratio"] = round(ours["peak_memory_mb"] / trl["peak_memory_mb"], 2)
    result["goal"] = "at least 8x TRL's speed per epoch at no more peak memory than TRL"
    result["goal_met"] = result["speedup_epoch"] >= 8 and result["peak_memory_ratio"] <= 1
    out = Path(args.out)
    write_result(result, out, plot)
    print(f"epoch speed-up over TRL SFTTrainer: {result['speedup_epoch']}x (TRL processes {result['token_ratio']}x "
          f"the tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
