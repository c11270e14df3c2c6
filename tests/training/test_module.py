"""SwirlModule with a tiny random Llama: the objectives against hand computations (in one pass and in micro-batches),
swirl sampling and judging, manual optimization, live validation, quantized loading."""

import dataclasses
import re
import zlib

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from swirl_lightning import hookimpl
from swirl_lightning.core.config import JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig, greedy
from swirl_lightning.core.plugins import get_plugin_manager
from swirl_lightning.core.tasks import load_task
from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory as _reference
from swirl_lightning.core.trajectory import Judgement, write_jsonl
from swirl_lightning.judging.base import StepJudgeBase
from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings
from swirl_lightning.training.config import (
    EvaluationConfig,
    ExportConfig,
    LoraConfig,
    OptimizerConfig,
    TrainDataConfig,
    ValidationDataConfig,
)
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.loss import token_logprobs
from swirl_lightning.training.micro_batches import backward_in_passes
from swirl_lightning.training.module import SwirlModule
from swirl_lightning.training.objectives.swirl import SwirlConfig
from swirl_lightning.training.packing import unpacked_trajectory_rows
from swirl_lightning.training.sequences import trajectory_segments

# Unit tests call training_step without a Trainer; its self.log calls are then no-ops.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")]


TASK = TaskConfig(name="gsm8k", max_actions=3, few_shot=False, limit=6)
TINY = PolicyConfig(name="tiny-random")
LORA = LoraConfig(r=4, alpha=8)
EVALUATION = EvaluationConfig(sampling=greedy(max_new_tokens=6, batch_size=4), log_trajectories=2)


def gsm8k_reference_trajectory(example):
    return _reference(example, tool_tag="math_exp")


def make_data(objective: str, task: TaskConfig = TASK, **train) -> SwirlDataModule:
    train = {"reference": True, "batch_size": 3, **train}
    data = SwirlDataModule(task=task, train=TrainDataConfig(**train), validation=ValidationDataConfig(questions=2),
                           objective=objective, tokenizer="tiny-random")
    data.setup("fit")
    return data


def make_module(objective: str, lora: LoraConfig = LORA, **kwargs) -> SwirlModule:
    torch.manual_seed(0)
    kwargs = {"policy": TINY, "task": TASK, "evaluation": EVALUATION, "export": ExportConfig(enabled=False), **kwargs}
    module = SwirlModule(objective=objective, lora=lora, **kwargs)
    module.configure_model()
    return module


def decomposed_nll(module: SwirlModule, segments, weights) -> tuple[torch.Tensor, int]:
    """sum_k w_k * sum_t -log pi(a_k,t) over one row per action (full logits), and the action token count."""
    lm = module.scorer.causal_lm
    total, tokens = torch.zeros(()), 0
    for (ids, action_mask), weight in zip(unpacked_trajectory_rows(segments), weights):
        with torch.no_grad():
            logits = lm(input_ids=ids.unsqueeze(0)).logits
        logprobs = token_logprobs(logits, ids.unsqueeze(0))[0]
        total -= weight * logprobs[action_mask == 1].sum()
        tokens += int(action_mask.sum())
    return total, tokens


def test_sft_loss_equals_one_pass_per_action():
    data = make_data("sft")
    module = make_module("sft")
    batch = next(iter(data.train_dataloader()))
    loss = module.training_step(batch, 0)
    trajectories = {t.example_id: t for t in (gsm8k_reference_trajectory(e) for e in data.examples.values())}
    renderer = ChatRenderer(data.tokenizer)
    settings = RolloutSettings.for_task(TASK, ToolsConfig())
    total, tokens = torch.zeros(()), 0
    for example_id in batch.example_ids:
        trajectory = trajectories[example_id]
        # The prompt a rollout would show: system turn with the tools, then the question.
        trajectory.prompt = settings.prompt(data.examples[example_id].question)
        segments = trajectory_segments(trajectory, data.tokenizer, renderer)
        row_total, row_tokens = decomposed_nll(module, segments, [1.0] * len(trajectory.steps))
        total, tokens = total + row_total, tokens + row_tokens
    assert tokens == int((batch.segment_ids > 0).sum())
    torch.testing.assert_close(loss.detach(), total / tokens, rtol=1e-5, atol=1e-5)
    loss.backward()
    grads = [p.grad for p in module.scorer.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_offline_loss_weights_each_action_by_its_judged_score(tmp_path):
    examples = load_task("gsm8k", "train", 5)
    trajectories = [gsm8k_reference_trajectory(e) for e in examples]
    for t in trajectories:
        for k, step in enumerate(t.steps):
            step.judgements = [Judgement("reference", "GOOD", 0.5 ** k)]
    path = tmp_path / "judged.jsonl"
    write_jsonl(path, trajectories)
    data = make_data("offline", dataclasses.replace(TASK, limit=None), reference=False, path=str(path),
                     reward="judge", batch_size=2)
    module = make_module("offline")
    batch = next(iter(data.train_dataloader()))
    loss = module.training_step(batch, 0)
    by_id = {t.example_id: t for t in trajectories}
    renderer = ChatRenderer(data.tokenizer)
    total, tokens = torch.zeros(()), 0
    for example_id in batch.example_ids:
        trajectory = by_id[example_id]
        weights = [0.5 ** k for k in range(len(trajectory.steps))]
        row_total, row_tokens = decomposed_nll(module, trajectory_segments(trajectory, data.tokenizer, renderer), weights)
        total, tokens = total + row_total, tokens + row_tokens
    torch.testing.assert_close(loss.detach(), total / tokens, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    data = make_data("sft")
    batch = next(iter(data.train_dataloader()))
    results = []
    for checkpointing in (False, True):
        module = make_module("sft", LoraConfig(r=4), gradient_checkpointing=checkpointing)
        module.scorer.train()
        loss = module.training_step(batch, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.scorer.parameters() if p.requires_grad]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for plain, checkpointed in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(plain, checkpointed, rtol=1e-4, atol=1e-6)


def test_auto_checkpointing_checkpoints_the_long_batches_only_and_changes_no_gradient():
    from swirl_lightning.core.config import PolicyConfig as Policy
    from swirl_lightning.training.policy import AUTO_CHECKPOINT_ABOVE_TOKENS, ActionScorer, load_trainable_policy

    results = {}
    for checkpointing in (False, "auto"):
        torch.manual_seed(0)
        lm = load_trainable_policy(Policy(name="tiny-random"), LoraConfig(), "cpu", gradient_checkpointing=checkpointing)
        scorer = ActionScorer(lm, checkpointing=checkpointing).train()
        layers = [m for m in lm.modules() if hasattr(m, "_gradient_checkpointing_func")]
        assert bool(layers) == (checkpointing == "auto")
        for rows, length in ((1, 16), (2, AUTO_CHECKPOINT_ABOVE_TOKENS // 2 + 1)):
            ids = torch.randint(5, 1000, (rows, length), generator=torch.Generator().manual_seed(length))
            segments = torch.zeros_like(ids)
            segments[:, length // 2 :] = 1
            logprobs, _ = scorer(ids, torch.ones_like(ids), segments)
            if layers:  # checkpointed exactly when the batch holds more than the threshold's tokens
                assert {layer.gradient_checkpointing for layer in layers} == {rows * length > AUTO_CHECKPOINT_ABOVE_TOKENS}
            logprobs.sum().backward()
            results[checkpointing, rows] = [p.grad.clone() for p in scorer.parameters()]
            scorer.zero_grad(set_to_none=True)
    for rows in (1, 2):
        for plain, checkpointed in zip(results[False, rows], results["auto", rows]):
            torch.testing.assert_close(plain, checkpointed, rtol=1e-4, atol=1e-5)


def test_swirl_with_gradient_checkpointing_samples_the_same_and_gives_the_same_loss_and_gradients(hash_judge):
    # The swirl step samples with the engine's own KV cache while the policy trains: checkpointing must not turn
    # that cache off or change the samples, the loss or the gradients.
    data = make_data("swirl")
    states = data.train_items[:2]
    results = []
    for checkpointing in (False, True):
        module = make_module("swirl", swirl=SwirlConfig(group_size=3), judge=JudgeConfig(hash_judge),
                             sampling=SamplingConfig(max_new_tokens=6), gradient_checkpointing=checkpointing)
        module.scorer.train()
        parts = module.objective_parts()
        prepared = module.objective.prepare(parts, states)
        loss, _ = module.objective.loss(parts, prepared)
        loss.backward()
        results.append((prepared.data.samples, loss.detach(),
                        [p.grad.clone() for p in module.scorer.parameters() if p.requires_grad]))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(results[0][1], results[1][1])
    for plain, checkpointed in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(plain, checkpointed, rtol=1e-4, atol=1e-6)


class HashJudge(StepJudgeBase):
    """A step judge with varied, deterministic rewards: a hash of the sampled text."""

    judge_id = "hash"

    def __init__(self, levels: int = 4):
        self.levels = levels

    def judge_steps(self, items):
        return [self.judgement((zlib.crc32(step.text.encode()) % self.levels) / (self.levels - 1)) for _, step in items]


class HashJudgePlugin:
    @hookimpl
    def register_judges(self, register):
        register(HashJudge, name="hash")


@pytest.fixture
def hash_judge():
    manager = get_plugin_manager()
    plugin = HashJudgePlugin()
    manager.register(plugin, name="test-hash-judge")
    yield "hash"
    manager.unregister(plugin)


def test_swirl_batch_samples_judges_and_packs(hash_judge):
    data = make_data("swirl")
    module = make_module("swirl", swirl=SwirlConfig(group_size=4, kl_beta=0.1), judge=JudgeConfig(hash_judge),
                         sampling=SamplingConfig(max_new_tokens=6))
    states = data.train_items[:3]
    parts = module.objective_parts()
    prepared = module.objective.prepare(parts, states)
    batch = prepared.data
    assert [len(group) for group in batch.samples] == [4, 4, 4]
    assert all(1 <= len(ids) <= 6 for group in batch.samples for ids, _ in group)
    assert batch.rewards.shape == (3, 4) and batch.rewards.std() > 0
    torch.testing.assert_close(batch.advantages.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.advantages, batch.rewards - batch.rewards.mean(dim=1, keepdim=True))
    assert batch.inputs["attention_mask"].ndim == 4 and batch.inputs["input_ids"].shape[0] == 3  # one row per state

    loss, metrics = module.objective.loss(parts, prepared)
    assert torch.isfinite(loss)
    # A fresh LoRA adapter changes nothing yet: the policy equals its reference, the KL is 0.
    assert abs(float(metrics["train/kl"])) < 1e-6
    # The packed row gives each action the log-probs of a separate pass over state + action.
    lm = module.scorer.causal_lm
    for g in (0, 3):
        ids = torch.tensor(states[0].token_ids + batch.samples[0][g][0]).unsqueeze(0)
        with torch.no_grad():
            separate = token_logprobs(lm(input_ids=ids).logits, ids)[0, len(states[0].token_ids):].sum()
        packed = batch.old_logprobs[0][batch.inputs["segment_ids"][0] == g + 1].sum()  # kept by the first update
        torch.testing.assert_close(packed, separate, rtol=1e-4, atol=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.scorer.parameters() if p.requires_grad)


def test_swirl_fit_updates_ppo_epochs_times_per_batch(hash_judge, tmp_path):
    data = SwirlDataModule(task=dataclasses.replace(TASK, limit=5), train=TrainDataConfig(reference=True, batch_size=2),
                           validation=ValidationDataConfig(questions=1), objective="swirl", tokenizer="tiny-random")
    module = SwirlModule(policy=TINY, objective="swirl", task=TASK, swirl=SwirlConfig(group_size=2, ppo_epochs=2),
                         judge=JudgeConfig(hash_judge), sampling=SamplingConfig(max_new_tokens=4), lora=LORA,
                         evaluation=EVALUATION, optimizer=OptimizerConfig(lr=1e-2), export=ExportConfig(enabled=False))
    trainer = L.Trainer(accelerator="cpu", max_steps=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, data)
    assert trainer.global_step == 4  # 2 batches x 2 updates
    lora_b = [p for n, p in module.scorer.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: the updates moved it
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_validation_rolls_out_live_and_logs_rates_and_text(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = SwirlDataModule(task=TASK, train=TrainDataConfig(reference=True), validation=ValidationDataConfig(questions=3),
                           validation_batch_size=2, tokenizer="tiny-random")
    module = SwirlModule(policy=TINY, task=TASK, evaluation=EVALUATION, lora=LORA)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, data)
    assert metrics["val/accuracy"] == 0.0  # random weights
    assert 1.0 <= metrics["val/steps_mean"] <= TASK.max_actions
    for name in ("val/invalid_action_rate", "val/step_good_rate"):
        assert 0.0 <= metrics[name] <= 1.0
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    held_out = sorted(e.id for e in data.val_examples)
    (table,) = events.Tensors("val/rollouts/text_summary")  # every rollout, one row each
    rows = [line for line in table.tensor_proto.string_val[0].decode().splitlines() if line.startswith("| gsm8k")]
    assert sorted(row.split(" | ")[0][2:] for row in rows) == held_out
    # The first log_trajectories questions step by step, each under its own tag (the same at every validation).
    detailed = sorted(tag for tag in events.Tags()["tensors"] if tag.startswith("val/trajectory/"))
    assert detailed == [f"val/trajectory/{example_id}/0/text_summary" for example_id in held_out[:2]]
    (text,) = events.Tensors(detailed[0])
    markdown = text.tensor_proto.string_val[0].decode()
    assert "**step 1**" in markdown and "reference " in markdown and "gold answer: `" in markdown
    assert metrics["step"] == 0  # the optimizer step of the weights validated
    # Without a progress bar, the batches done so far are printed (the last one is the summary line instead).
    printed = capsys.readouterr().out
    assert re.search(r"^val: 1/2 batches, 2 rollouts \(0 correct so far\) in \d+\.\d min$", printed, re.M), printed
    assert "val: 2/2" not in printed


def test_quantized_lora_with_8bit_adamw_trains_on_cpu():
    data = make_data("sft")
    module = make_module("sft", LoraConfig(r=4, quantize="8bit"), optimizer=OptimizerConfig(name="adamw8bit", lr=1e-2))
    assert "8bit" in type(module.scorer.causal_lm.model.layers[0].mlp.up_proj.base_layer).__name__
    optimizer = module.configure_optimizers()["optimizer"]
    assert "8bit" in type(optimizer).__name__
    before = [p.detach().clone() for p in module.scorer.parameters() if p.requires_grad]
    loss = module.training_step(next(iter(data.train_dataloader())), 0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = [p.detach() for p in module.scorer.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_quantization_without_lora_is_refused():
    with pytest.raises(ValueError, match="needs LoRA"):
        LoraConfig(quantize="4bit")


# -- micro-batches: the same losses, metrics, gradients and updates as one pass per batch -------------------

ONE_ROW_A_PASS = 1  # a budget under any row's length: every row is a pass of its own


def trainable_gradients(module: SwirlModule) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.scorer.parameters() if p.requires_grad]


@pytest.mark.parametrize("objective", ["sft", "offline"])
def test_rows_objectives_give_the_same_loss_and_gradients_in_passes(objective):
    data = make_data(objective, batch_size=4)
    batch = next(iter(data.train_dataloader()))
    results = {}
    for budget in (0, ONE_ROW_A_PASS):
        module = make_module(objective, micro_batch_tokens=budget)
        module.scorer.train()
        prepared = module.objective.prepare(module.objective_parts(), batch)
        assert len(module.objective.micro_batches(prepared.data, budget)) == (1 if budget == 0 else 4)
        loss = module.training_step(batch, 0)
        loss.backward()  # the last pass's (the earlier ones ran in training_step)
        results[budget] = loss.detach(), trainable_gradients(module)
    torch.testing.assert_close(results[0][0], results[ONE_ROW_A_PASS][0], rtol=1e-5, atol=1e-6)
    for whole, passes in zip(results[0][1], results[ONE_ROW_A_PASS][1]):
        torch.testing.assert_close(whole, passes, rtol=1e-4, atol=1e-6)


def update_in_passes(module: SwirlModule, parts, prepared, passes):
    """One update of ``module``'s objective over ``passes``, every backward run (manual optimization's way)."""
    return backward_in_passes(passes, lambda data: module.objective.loss(parts, dataclasses.replace(prepared, data=data)),
                              module.backward_pass)


def test_swirl_gives_the_same_losses_metrics_and_gradients_in_passes_over_several_updates(hash_judge):
    data = make_data("swirl")
    states = data.train_items[:3]
    results = {}
    for budget in (0, ONE_ROW_A_PASS):
        module = make_module("swirl", swirl=SwirlConfig(group_size=3, kl_beta=0.1, ppo_epochs=2),
                             judge=JudgeConfig(hash_judge), sampling=SamplingConfig(max_new_tokens=6),
                             micro_batch_tokens=budget)
        module.scorer.train()
        parts = module.objective_parts()
        prepared = module.objective.prepare(parts, states)
        passes = module.objective.micro_batches(prepared.data, budget)
        assert len(passes) == (1 if budget == 0 else 3)
        updates = []
        for _ in range(2):  # the second update's ratios are against the first's log-probs, kept pass by pass
            module.scorer.zero_grad(set_to_none=True)
            loss, metrics = update_in_passes(module, parts, prepared, passes)
            updates.append((loss, metrics, trainable_gradients(module)))
            with torch.no_grad():  # a fixed step, so that the second update's ratios differ from 1
                for p in module.scorer.parameters():
                    if p.requires_grad:
                        p -= 0.5 * p.grad.sign()
        results[budget] = prepared.data.samples, updates
    assert results[0][0] == results[ONE_ROW_A_PASS][0]
    for (loss, metrics, grads), (loss_p, metrics_p, grads_p) in zip(results[0][1], results[ONE_ROW_A_PASS][1]):
        torch.testing.assert_close(loss, loss_p, rtol=1e-5, atol=1e-6)
        assert metrics.keys() == metrics_p.keys()
        for name in metrics:
            torch.testing.assert_close(torch.as_tensor(metrics[name]).float(), torch.as_tensor(metrics_p[name]).float(),
                                       rtol=1e-4, atol=1e-5, msg=name)
        for whole, passes in zip(grads, grads_p):
            torch.testing.assert_close(whole, passes, rtol=1e-4, atol=1e-6)
    assert float(results[0][1][1][1]["train/ratio_mean"]) != pytest.approx(1.0)  # the second update was off-policy


class GradientsBeforeTheStep(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.gradients = trainable_gradients(pl_module)


def test_a_fit_with_gradient_accumulation_accumulates_the_same_gradients_in_passes(tmp_path):
    # Two batches accumulated into one update: Lightning scales the loss it backpropagates by 1/2, and the passes whose
    # backward runs in training_step must be scaled alike.
    data = make_data("sft", batch_size=3)
    gradients, weights = {}, {}
    for budget in (0, ONE_ROW_A_PASS):
        module = make_module("sft", micro_batch_tokens=budget, optimizer=OptimizerConfig(lr=1e-2))
        start = [p.detach().clone() for p in module.scorer.parameters() if p.requires_grad]
        probe = GradientsBeforeTheStep()
        trainer = L.Trainer(accelerator="cpu", max_steps=1, accumulate_grad_batches=2, limit_val_batches=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[probe], default_root_dir=tmp_path / str(budget))
        trainer.fit(module, data)
        assert trainer.global_step == 1
        gradients[budget] = probe.gradients
        weights[budget] = [p.detach().clone() for p in module.scorer.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(start, weights[budget]))
    for whole, passes in zip(gradients[0] + weights[0], gradients[ONE_ROW_A_PASS] + weights[ONE_ROW_A_PASS]):
        torch.testing.assert_close(whole, passes, rtol=1e-4, atol=1e-6)


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        make_module("sft", micro_batch_tokens=-1)


@pytest.mark.parametrize("budget", [0, ONE_ROW_A_PASS])
def test_a_non_finite_loss_in_any_pass_stops_the_batch_before_an_update(budget, monkeypatch):
    module = make_module("sft", micro_batch_tokens=budget)
    batch = next(iter(make_data("sft", batch_size=3).train_dataloader()))
    real_loss, calls = module.objective.loss, []

    def loss_nan_in_the_first_pass(parts, prepared):
        loss, metrics = real_loss(parts, prepared)
        calls.append(loss)
        return (loss * float("nan") if len(calls) == 1 else loss), metrics

    monkeypatch.setattr(module.objective, "loss", loss_nan_in_the_first_pass)
    with pytest.raises(ValueError, match="the training loss is nan at step 0"):
        module.training_step(batch, 0)
    assert len(calls) == (1 if budget == 0 else 3)  # every pass ran: the check is on the whole batch's loss
