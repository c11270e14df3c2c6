"""Online step-wise RL speed: swirl-lightning's ``swirl`` objective against TRL ``GRPOTrainer`` with each
state before an action as a prompt and the same judge as reward function.

    python benchmarks/rl_speed_bench.py [--model smollm2-135m-instruct] [--group-sizes 4 8] [--steps 4] [--states 4]
    python benchmarks/rl_speed_bench.py --smoke      # tiny random model, a few steps (run by the test suite)

Data: the states of GSM8K reference trajectories (zero-shot prompt); reward: the reference-guided step judge (a
sampled calculator call is run and compared with the worked solution). Both sides: full fine-tuning, AdamW
lr 1e-5, no KL term, one update per sampled batch, G sampled actions of at most ``--max-new-tokens`` tokens per
state, temperature 1, ``--states`` states per step, ``--steps`` steps, fp32 on CPU. Each side runs in its own
subprocess. Reported: states/s and the split of the wall time between generation, judging and the rest
(log-probs, backward, optimizer), and sampled tokens per action. Needs the ``bench`` extra.
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

from common import add_side_options, machine_info, run_side, subplots, write_result  # noqa: E402
from sft_speed_bench import write_trajectories  # noqa: E402


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

    from swirl_lightning.core.config import JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig
    from swirl_lightning.training.config import ExportConfig, OptimizerConfig, SwirlConfig, TrainDataConfig, ValidationDataConfig
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule

    torch.manual_seed(0)
    task = TaskConfig(name="gsm8k", few_shot=False)
    data = SwirlDataModule(task=task, objective="swirl", tokenizer=args.model,
                           train=TrainDataConfig(path=args.data, batch_size=args.states, shuffle=False),
                           validation=ValidationDataConfig(split="validation", questions=1))
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.states * args.group_size)
    module = SwirlModule(policy=PolicyConfig(name=args.model), task=task, sampling=sampling,
                         judge=JudgeConfig("reference"), objective="swirl", export=ExportConfig(enabled=False),
                         swirl=SwirlConfig(group_size=args.group_size, kl_beta=0.0), optimizer=OptimizerConfig(lr=1e-5))
    sampled_tokens: list[int] = []
    objective = module.objective
    sample, score = Timer(objective.sample), Timer(objective.rewards)

    def counted_sample(*sample_args):
        groups = sample(*sample_args)
        sampled_tokens.extend(len(ids) for group in groups for ids, _ in group)
        return groups

    objective.sample, objective.rewards = counted_sample, score
    trainer = L.Trainer(max_steps=args.steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    data.setup("fit")
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - started
    return {"side": "swirl-lightning", "wall_seconds": wall, "states": args.steps * args.states,
            "generation_seconds": sample.seconds, "judging_seconds": score.seconds, "sampled_tokens": sampled_tokens}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.core.tools import collect_tools, tool_tags
    from swirl_lightning.core.trajectory import State, Step, parse_action
    from swirl_lightning.judging.reference import ReferenceJudge
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.core.trajectory import decompose, read_trajectories

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
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    generate = Timer(trainer.model.generate)
    trainer.model.generate = generate
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {"side": "trl", "trl_version": __import__("trl").__version__, "wall_seconds": wall,
            "states": args.steps * args.states, "generation_seconds": generate.seconds, "generate_calls": generate.calls,
            "judging_seconds": reward.seconds, "sampled_tokens": sampled_tokens}


def run_one_side(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_ours(args) if args.side == "ours" else run_trl(args)
    tokens = result.pop("sampled_tokens")
    result["group_size"] = args.group_size
    result["states_per_second"] = result["states"] / result["wall_seconds"]
    result["sampled_actions"] = len(tokens)
    result["tokens_per_action"] = sum(tokens) / max(len(tokens), 1)
    result["update_seconds"] = result["wall_seconds"] - result["generation_seconds"] - result["judging_seconds"]
    Path(args.result).write_text(json.dumps(result))
    return 0


def plot(result: dict):  # the figure write_result saves
    runs = result["runs"]
    fig, ax = subplots(figsize=(8, 4))
    labels = [f"{r['side']}\nG={r['group_size']}" for r in runs]
    bottom = [0.0] * len(runs)
    for part, color in (("generation_seconds", "tab:blue"), ("judging_seconds", "tab:green"),
                        ("update_seconds", "tab:orange")):
        values = [r[part] / r["states"] for r in runs]
        ax.bar(labels, values, bottom=bottom, color=color, label=part.replace("_seconds", ""))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("seconds per state")
    ax.set_title(f"{result['model']}: online step-wise RL, {result['states_per_step']} states x G per step")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--states", type=int, default=4, help="states per step")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    parser.add_argument("--out", default=str(HERE / "results" / "rl_speed.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 steps of 2 states, G=2")
    add_side_options(parser)
    parser.add_argument("--group-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return run_one_side(args)
    if args.smoke:
        args.model, args.group_sizes, args.steps, args.states, args.max_new_tokens = "tiny-random", [2], 2, 2, 8

    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    data = workdir / "trajectories.jsonl"
    data_info = write_trajectories(data, args.steps * args.states, 1)  # at least as many states as needed
    result = {"benchmark": "rl_speed", "command": " ".join([sys.executable, *sys.argv]), "model": args.model,
              "machine": machine_info(), "data": data_info, "states_per_step": args.states, "steps": args.steps,
              "max_new_tokens": args.max_new_tokens, "runs": []}
    for group_size in args.group_sizes:
        for side in ("ours", "trl"):
            run = run_side(__file__, ["--side", side, "--group-size", str(group_size), "--data", str(data),
                                      "--model", args.model, "--steps", str(args.steps), "--states", str(args.states),
                                      "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)],
                           workdir / f"{side}-{group_size}.json", f"{side} (G={group_size})")
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    speedups = {}
    for group_size in args.group_sizes:
        ours, trl = (next(r for r in result["runs"] if r["side"] == s and r["group_size"] == group_size)
                     for s in ("swirl-lightning", "trl"))
        speedups[str(group_size)] = round(ours["states_per_second"] / trl["states_per_second"], 2)
    result["speedup_states_per_second"] = speedups
    result["goal"] = "at least 2x TRL's states/s"
    result["goal_met"] = all(v >= 2 for v in speedups.values())
    out = Path(args.out)
    write_result(result, out, plot)
    print(f"states/s speed-up over TRL GRPOTrainer by G: {speedups}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
