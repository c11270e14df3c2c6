"""Judges backed by a local causal LM: the paper's gold-free ``process`` step judge and the ``grader`` outcome judge.

``process`` (:class:`ProcessJudge`): the LM is asked whether the step is GOOD or BAD *for that step only*, without
the gold answer. Score = P(GOOD) read from the next-token logits (deterministic, no sampling). The judge prompt
ends with the assistant turn opened as ``Verdict:``, so the verdict comes next with a leading space; P(GOOD) is the
softmax over the logits of the first token of ``" GOOD"`` and of ``" BAD"`` (with the SmolLM2 tokenizer ``ĠGOOD``
against ``ĠB``, as ``" BAD"`` splits into ``ĠB`` ``AD``). An invalid action is BAD with score 0 without asking the
model. On warm-start GSM8K rollouts SmolLM2-135M's P(GOOD) does not separate the reference judge's GOOD and BAD
steps: a 135M judge is no judge (``benchmarks/judge_agreement_bench.py``; its figures in benchmarks/README.md).

``grader`` (:class:`LLMGrader`): the LM says Yes/No to "does the prediction match the gold answer?".

Models load on first use, so building a judge (to read its ``judge_id``) is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swirl_lightning.core.models import SMOLLM2_ALIAS, load_model, load_tokenizer
from swirl_lightning.core.trajectory import Judgement, State, Step
from swirl_lightning.judging.base import BAD, GOOD, OutcomeJudgeBase, StepJudgeBase
from swirl_lightning.judging.judge_prompts import shorten as _shorten
from swirl_lightning.judging.options import JudgeOptions

PROCESS_PROMPT_VERSION = "process-v1"
GRADER_PROMPT_VERSION = "grader-v1"


def _verdict_token_id(tokenizer: Any, prompt_end: str, word: str) -> int:
    """The first token the model writes for ``" " + word`` right after a prompt ending in ``prompt_end``."""
    end_ids = tokenizer.encode(prompt_end, add_special_tokens=False)
    full_ids = tokenizer.encode(f"{prompt_end} {word}", add_special_tokens=False)
    if full_ids[: len(end_ids)] != end_ids or len(full_ids) == len(end_ids):
        raise ValueError(f"verdict word {word!r}: the tokenizer merges it into the prompt end {prompt_end!r}")
    return full_ids[len(end_ids)]


class VerdictScorer:
    """P(positive word) against the negative word, from the next-token logits after chat prompts.

    Prompts are rendered with the tokenizer's chat template plus ``reply_prefix`` in the opened assistant
    turn, and run in batches of ``batch_size`` sorted by length, left-padded, with explicit position ids
    so that padding changes no score.
    """

    def __init__(self, model: Any, tokenizer: Any, positive: str, negative: str, *,
                 reply_prefix: str = "Verdict:", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.reply_prefix, self.batch_size = reply_prefix, batch_size
        self.positive_id = _verdict_token_id(tokenizer, reply_prefix, positive)
        self.negative_id = _verdict_token_id(tokenizer, reply_prefix, negative)
        if self.positive_id == self.negative_id:
            raise ValueError(f"verdict words {positive!r} and {negative!r} begin with the same token; pick others")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered for the model, ending so that the verdict is the next token."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text + self.reply_prefix, add_special_tokens=False)["input_ids"]

    def score_conversations(self, conversations: Sequence[list[dict[str, str]] | None]) -> list[float]:
        """P(positive) after each conversation; ``None`` (nothing to ask) scores 0 without a model call."""
        asked = [i for i, c in enumerate(conversations) if c is not None]
        scores = [0.0] * len(conversations)
        for i, p in zip(asked, self.probabilities([self.prompt_ids(c) for c in conversations if c is not None])):
            scores[i] = p
        return scores

    def probabilities(self, prompts: Sequence[list[int]]) -> list[float]:
        """P(positive) for each prompt (token ids), computed in padded batches."""
        import torch

        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out = [0.0] * len(prompts)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()  # dropout off: the verdict must not depend on the caller's training mode
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    width = max(len(prompts[i]) for i in chunk)
                    ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for row, i in enumerate(chunk):
                        ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                        mask[row, width - len(prompts[i]) :] = 1
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                        position_ids=positions.to(device), logits_to_keep=1).logits[:, -1, :]
                    pair = logits[:, [self.positive_id, self.negative_id]].float().softmax(-1)[:, 0]
                    for row, i in enumerate(chunk):
                        out[i] = float(pair[row])
        finally:
            self.model.train(was_training)
        return out


class _ModelVerdicts:
    """A :class:`VerdictScorer` built on first use (a model given by name loads then), and the model's name."""

    def __init__(self, model: str | Any, tokenizer: Any, model_name: str | None, positive: str, negative: str,
                 batch_size: int, device: str, dtype: str) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if not isinstance(model, str) and tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: pass tokenizer=...")
        self._args = (model, tokenizer, positive, negative, batch_size, device, dtype)
        self._scorer: VerdictScorer | None = None
        given = model if isinstance(model, str) else getattr(getattr(model, "config", None), "name_or_path", None)
        self.name = model_name or given or "custom"
        if not isinstance(model, str):
            self.scorer  # noqa: B018 - an already-loaded model costs nothing to wrap; fail early on bad verdict words

    @property
    def scorer(self) -> VerdictScorer:
        if self._scorer is None:
            model, tokenizer, positive, negative, batch_size, device, dtype = self._args
            if isinstance(model, str):
                tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
                model = load_model(model, dtype=dtype, device=device)
            self._scorer = VerdictScorer(model, tokenizer, positive, negative, batch_size=batch_size)
        return self._scorer


@dataclass(frozen=True)
class LocalModelOptions(JudgeOptions):
    """Options of a judge backed by a local causal LM (``grader``; ``process`` adds ``max_message_chars``)."""

    model: str = SMOLLM2_ALIAS
    """An alias, a local path or a hub id (the model loads on first use)."""
    model_name: str | None = None
    """The name in the judge id (``<judge>:<model_name or model>``): give a new one when the weights change."""
    threshold: float = 0.5
    """GOOD (or a right answer) when P(GOOD) (or P(Yes)) is at least this."""
    batch_size: int = 16
    """Prompts per forward pass."""
    device: str = "cpu"
    """Where the model runs (``cpu``, ``cuda``, ``cuda:1``)."""
    dtype: str = "float32"
    """The model's weights' dtype (``float32``, ``bfloat16``, ``float16``)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size}")

    def name(self) -> str:
        return self.model_name or self.model


@dataclass(frozen=True)
class ProcessOptions(LocalModelOptions):
    """Options of the ``process`` judge."""

    max_message_chars: int = 2000
    """Longer messages are shortened to their head and tail before the judge reads them."""

    def judge_id(self) -> str:
        return f"process:{self.name()}"


@dataclass(frozen=True)
class GraderOptions(LocalModelOptions):
    """Options of the ``grader`` outcome judge."""

    def judge_id(self) -> str:
        return f"grader:{self.name()}"


PROCESS_SYSTEM = (
    "You check one step of a step-by-step solution written by an assistant that can call tools "
    "(search, calculator). Judge only the step shown, given the question and the earlier steps and results. "
    "A search query or calculation is GOOD if it is likely to help answer the question. A final answer is "
    "GOOD only if it follows from what was retrieved or computed before. Anything else is BAD. "
    "Reply with one word: GOOD or BAD."
)


class ProcessJudge(StepJudgeBase):
    """The paper's gold-free step judge: P(GOOD) of one step from a local causal LM.

    ``model`` is an alias, path or hub id (loaded with :func:`~swirl_lightning.core.models.load_model` on first
    use), or an already-loaded model, then with ``tokenizer`` (e.g. the policy's own, to share memory). The judge
    id is ``process:<model_name>``; give a new ``model_name`` when the weights change (an adapter, a fine-tune),
    since cached judgements are found by judge id.
    """

    Options = ProcessOptions
    prompt_version = PROCESS_PROMPT_VERSION

    def __init__(self, model: str | Any = SMOLLM2_ALIAS, tokenizer: Any = None, *, model_name: str | None = None,
                 threshold: float = 0.5, batch_size: int = 16, device: str = "cpu", dtype: str = "float32",
                 max_message_chars: int = 2000) -> None:
        self.verdicts = _ModelVerdicts(model, tokenizer, model_name, GOOD, BAD, batch_size, device, dtype)
        self.judge_id = f"process:{self.verdicts.name}"
        self.threshold = threshold
        self.max_message_chars = max_message_chars

    @property
    def scorer(self) -> VerdictScorer:
        """The verdict scorer (the model loads on first use)."""
        return self.verdicts.scorer

    def prompt(self, state: list[dict[str, str]], action_text: str) -> list[dict[str, str]]:
        """The judge's chat messages: the state as a transcript (system turns left out), then the step."""
        lines = [f"{m['role'].capitalize()}: {_shorten(m['content'], self.max_message_chars)}"
                 for m in state if m["role"] != "system"]
        user = (
            "Question and earlier steps:\n\n" + "\n\n".join(lines)
            + f"\n\nStep to judge:\n{_shorten(action_text, self.max_message_chars)}\n\nIs this step GOOD or BAD?"
        )
        return [{"role": "system", "content": PROCESS_SYSTEM}, {"role": "user", "content": user}]

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        """P(GOOD) of each step, batched; an invalid action scores 0 without a model call."""
        conversations = [None if step.action.kind == "invalid" else self.prompt(state.messages, step.text)
                         for state, step in items]
        return [self.judgement(score) for score in self.scorer.score_conversations(conversations)]


GRADER_SYSTEM = (
    "You grade answers to questions. Given the question, the correct answer and a predicted answer, say "
    "whether the prediction means the same as the correct answer. Reply with one word: Yes or No."
)


class LLMGrader(OutcomeJudgeBase):
    """Outcome judge: a causal LM says Yes/No to 'does the prediction match the gold answer?'.

    The score is 1.0 when P(Yes) >= ``threshold`` (P(Yes) from the next-token logits of ``" Yes"`` against
    ``" No"``, both single tokens for SmolLM2); :meth:`probabilities` gives P(Yes) itself.
    """

    Options = GraderOptions

    def __init__(self, model: str | Any = SMOLLM2_ALIAS, tokenizer: Any = None, *, model_name: str | None = None,
                 threshold: float = 0.5, batch_size: int = 16, device: str = "cpu", dtype: str = "float32") -> None:
        self.verdicts = _ModelVerdicts(model, tokenizer, model_name, "Yes", "No", batch_size, device, dtype)
        self.judge_id = f"grader:{self.verdicts.name}"
        self.prompt_version = GRADER_PROMPT_VERSION
        self.threshold = threshold

    def prompt(self, prediction: str | None, gold: str, question: str | None = None) -> list[dict[str, str]]:
        """The grader's chat messages (the question is optional)."""
        asked = f"Question: {question}\n" if question else ""
        user = f"{asked}Correct answer: {gold}\nPredicted answer: {prediction or '(none)'}\n\nIs the prediction correct?"
        return [{"role": "system", "content": GRADER_SYSTEM}, {"role": "user", "content": user}]

    def probabilities(self, predictions: Sequence[str | None], golds: Sequence[str],
                      questions: Sequence[str | None] | None = None) -> list[float]:
        """P(Yes) of each (prediction, gold, question); a missing prediction gets 0 without a model call."""
        questions = questions if questions is not None else [None] * len(golds)
        return self.verdicts.scorer.score_conversations(
            [None if p is None else self.prompt(p, g, q) for p, g, q in zip(predictions, golds, questions)])

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        probs = self.probabilities(predictions, golds, questions)
        return [float(pred is not None and p >= self.threshold) for pred, p in zip(predictions, probs)]

    def score(self, prediction: str | None, gold: str) -> float | None:
        return self.score_batch([prediction], [gold])[0]
