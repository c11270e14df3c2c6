"""Judges: verdicts on single steps (stage 3 filtering, the stage 4 reward) and on final answers.

Step judges (:class:`StepJudge`) see the state before a step (chat messages) and the step:

- ``process`` (:class:`ProcessJudge`), the paper's judge: a causal LM is asked whether the step is GOOD or
  BAD *for that step only*, without the gold answer. Score = P(GOOD) read from the next-token logits
  (deterministic, no sampling). The judge prompt ends with the assistant turn opened as ``Verdict:``, so
  the verdict comes next with a leading space; P(GOOD) is the softmax over the logits of the first token
  of ``" GOOD"`` and of ``" BAD"`` (with the SmolLM2 tokenizer ``ĠGOOD`` against ``ĠB``, as ``" BAD"``
  splits into ``ĠB`` ``AD``). An invalid action is BAD with score 0 without asking the model.
- ``reference`` (:class:`ReferenceJudge`), a departure from the paper for data with worked solutions
  (GSM8K): a tool step is GOOD when its numeric result equals an intermediate value of the reference
  solution (the result of any ``<<expr=result>>`` annotation, or the final ``#### N``), an answer step is
  GOOD when it equals the gold answer, an invalid step is BAD. Numbers in the solution's prose are not
  used: they are mostly numbers copied from the question, so a step that restates one is no progress.
  The paper's judge is gold-free; this one uses the gold solution, which makes it cheap and strong on a
  CPU, where a 135M-parameter judge is no judge (on warm-start GSM8K rollouts SmolLM2-135M's P(GOOD) separates
  the reference judge's GOOD and BAD steps with ROC AUC 0.54, 95% CI 0.46-0.63: ``benchmarks/judge_agreement_bench.py``).

Outcome judges (:class:`OutcomeJudge`) compare a final answer with the gold answer: the rule-based
``numeric``, ``qa_em`` and ``qa_f1`` (in :mod:`swirl_lightning.answers`), and ``grader``
(:class:`LLMGrader`, an LM asked Yes/No given the gold answer).

Judges register through the ``register_judges`` hook, the built-ins included (this module is a plugin).
:func:`judge_trajectories` judges every step of many trajectories in batches, reusing cached judgements
(the on-disk store is :class:`swirl_lightning.filtering.JudgementCache`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from swirl_lightning import hookimpl
from swirl_lightning.answers import (  # noqa: F401 - re-exported: judges are looked up here
    ExactMatchJudge, NumericJudge, TokenF1Judge, exact_match, normalize_answer, outcome_for_task, parse_number, token_f1,
)
from swirl_lightning.models import SMOLLM2_ALIAS, load_model, load_tokenizer
from swirl_lightning.trajectory import Action, Example, Judgement, Step, Trajectory, decompose, parse_action

GOOD, BAD = "GOOD", "BAD"
PROCESS_PROMPT_VERSION = "process-v1"
GRADER_PROMPT_VERSION = "grader-v1"
REFERENCE_VERSION = "reference-v1"
DEFAULT_TOOL_TAGS = {"math_exp": "calculator", "search_query": "search"}


@dataclass
class StepToJudge:
    """One step with the chat messages before it, and its example when the judge needs the gold data."""

    state: list[dict[str, str]]
    step: Step
    example: Example | None = None


class StepJudge(Protocol):
    """A judge of single steps. ``threshold``, ``cacheable`` and ``needs_example`` are read if present."""

    judge_id: str
    prompt_version: str

    def judge_steps(self, items: list[StepToJudge]) -> list[Judgement]:
        """One judgement per item, in order."""


class OutcomeJudge(Protocol):
    """A judge of final answers; may also offer ``score_batch(predictions, golds, questions)``."""

    judge_id: str

    def score(self, prediction: str | None, gold: str) -> float:
        """1.0/0.0 for a match, or a partial credit such as token F1."""


def verdict_for(score: float, threshold: float) -> str:
    """``GOOD`` when ``score >= threshold``; a score of 0 (an invalid step, a failed call) is BAD at any threshold."""
    return GOOD if score > 0 and score >= threshold else BAD


# ----------------------------------------------------------------------------------------------------
# Model-backed verdicts


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
        for i, p in zip(asked, self.probabilities([self.prompt_ids(conversations[i]) for i in asked])):
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


def _load_scorer(model: str | Any, tokenizer: Any, model_name: str | None, positive: str, negative: str,
                 batch_size: int, device: str, dtype: str) -> tuple[VerdictScorer, str]:
    if isinstance(model, str):
        model_name = model_name or model
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        model = load_model(model, dtype=dtype, device=device)
    elif tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer: pass tokenizer=...")
    name = model_name or getattr(getattr(model, "config", None), "name_or_path", None) or "custom"
    return VerdictScorer(model, tokenizer, positive, negative, batch_size=batch_size), name


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters: the head and tail of a long text with the cut marked."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 10, 1)
    return f"{text[:half]} [... {len(text) - 2 * half} characters cut ...] {text[-half:]}"


PROCESS_SYSTEM = (
    "You check one step of a step-by-step solution written by an assistant that can call tools "
    "(search, calculator). Judge only the step shown, given the question and the earlier steps and results. "
    "A search query or calculation is GOOD if it is likely to help answer the question. A final answer is "
    "GOOD only if it follows from what was retrieved or computed before. Anything else is BAD. "
    "Reply with one word: GOOD or BAD."
)


class ProcessJudge:
    """The paper's gold-free step judge: P(GOOD) of one step from a local causal LM.

    ``model`` is an alias, path or hub id (loaded with :func:`~swirl_lightning.models.load_model`), or an
    already-loaded model, then with ``tokenizer`` (e.g. the policy's own, to share memory). The judge id is
    ``process:<model_name>``; give a new ``model_name`` when the weights change (an adapter, a fine-tune),
    since cached judgements are found by judge id.
    """

    cacheable = True
    needs_example = False

    def __init__(self, model: str | Any = SMOLLM2_ALIAS, tokenizer: Any = None, *, model_name: str | None = None,
                 threshold: float = 0.5, batch_size: int = 16, device: str = "cpu", dtype: str = "float32",
                 max_message_chars: int = 2000) -> None:
        self.scorer, name = _load_scorer(model, tokenizer, model_name, GOOD, BAD, batch_size, device, dtype)
        self.judge_id = f"process:{name}"
        self.prompt_version = PROCESS_PROMPT_VERSION
        self.threshold = threshold
        self.max_message_chars = max_message_chars

    def prompt(self, state: list[dict[str, str]], action_text: str) -> list[dict[str, str]]:
        """The judge's chat messages: the state as a transcript (system turns left out), then the step."""
        lines = [f"{m['role'].capitalize()}: {_shorten(m['content'], self.max_message_chars)}"
                 for m in state if m["role"] != "system"]
        user = (
            "Question and earlier steps:\n\n" + "\n\n".join(lines)
            + f"\n\nStep to judge:\n{_shorten(action_text, self.max_message_chars)}\n\nIs this step GOOD or BAD?"
        )
        return [{"role": "system", "content": PROCESS_SYSTEM}, {"role": "user", "content": user}]

    def score_actions(self, states: Sequence[list[dict[str, str]]], action_texts: Sequence[str],
                      actions: Sequence[Action] | None = None) -> list[float]:
        """P(GOOD) of each (state, action text) pair, batched; the reward entry for RL.

        With ``actions`` (parsed), an invalid action scores 0 without a model call.
        """
        if len(states) != len(action_texts) or (actions is not None and len(actions) != len(states)):
            raise ValueError("states, action_texts (and actions) must have the same length")
        invalid = [actions is not None and a.kind == "invalid" for a in (actions or states)]
        return self.scorer.score_conversations(
            [None if bad else self.prompt(s, t) for s, t, bad in zip(states, action_texts, invalid)])

    def judge_steps(self, items: list[StepToJudge]) -> list[Judgement]:
        scores = self.score_actions([it.state for it in items], [it.step.text for it in items],
                                    [it.step.action for it in items])
        return [Judgement(self.judge_id, verdict_for(s, self.threshold), s, self.prompt_version) for s in scores]


GRADER_SYSTEM = (
    "You grade answers to questions. Given the question, the correct answer and a predicted answer, say "
    "whether the prediction means the same as the correct answer. Reply with one word: Yes or No."
)


class LLMGrader:
    """Outcome judge: a causal LM says Yes/No to 'does the prediction match the gold answer?'.

    The score is 1.0 when P(Yes) >= ``threshold`` (P(Yes) from the next-token logits of ``" Yes"`` against
    ``" No"``, both single tokens for SmolLM2); :meth:`probabilities` gives P(Yes) itself.
    """

    def __init__(self, model: str | Any = SMOLLM2_ALIAS, tokenizer: Any = None, *, model_name: str | None = None,
                 threshold: float = 0.5, batch_size: int = 16, device: str = "cpu", dtype: str = "float32") -> None:
        self.scorer, name = _load_scorer(model, tokenizer, model_name, "Yes", "No", batch_size, device, dtype)
        self.judge_id = f"grader:{name}"
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
        return self.scorer.score_conversations(
            [None if p is None else self.prompt(p, g, q) for p, g, q in zip(predictions, golds, questions)])

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float]:
        probs = self.probabilities(predictions, golds, questions)
        return [float(pred is not None and p >= self.threshold) for pred, p in zip(predictions, probs)]

    def score(self, prediction: str | None, gold: str) -> float:
        return self.score_batch([prediction], [gold])[0]


# ----------------------------------------------------------------------------------------------------
# Reference-guided step judge

_ANNOTATION_RESULT_RE = re.compile(r"<<[^<>=]*=([^<>=]*)>>")
_FINAL_LINE_RE = re.compile(r"^####\s*(.*?)\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=4096)
def reference_values(solution: str) -> tuple[str, ...]:
    """The intermediate values of a GSM8K worked solution: every annotation result and the final answer."""
    found = [m.strip() for m in _ANNOTATION_RESULT_RE.findall(solution)] + _FINAL_LINE_RE.findall(solution)
    return tuple(v for v in found if parse_number(v) is not None)


def matches_reference(value: Fraction, reference: str) -> bool:
    """``value`` equals the written ``reference`` number, exactly or within 1e-6 relative, or rounds to it
    at the reference's own decimal places when it has some (``0.333333`` matches ``.33``; ``33.3`` does
    not match ``33``)."""
    expected = parse_number(reference)
    if expected is None:
        return False
    if value == expected or math.isclose(float(value), float(expected), rel_tol=1e-6, abs_tol=1e-9):
        return True
    places = len(reference.strip().partition(".")[2]) if "." in reference else 0
    if places == 0:
        return False
    scale = 10**places  # half away from zero, as people round
    rounded = Fraction(math.floor(abs(value) * scale + Fraction(1, 2)), scale)
    return (rounded if value >= 0 else -rounded) == expected


def _default_calculate() -> Callable[[str], str]:
    try:
        from swirl_calculator import calculator
    except ImportError as err:
        raise ImportError("the reference judge evaluates sampled calculator calls with swirl-calculator: "
                          "install it (plugins/swirl-calculator) or pass calculate=<fn(str) -> str>") from err
    return calculator


class ReferenceJudge:
    """Step judge from a GSM8K worked solution (``Example.metadata["solution"]``); see the module docstring.

    ``tool_tags`` maps tags to tool names for :meth:`score_actions`, which must run a sampled calculator
    call itself (``calculate``, default swirl-calculator's) as no tool runs during RL. A call to any other
    tool scores 0 there: without its result the reference says nothing about it.
    """

    judge_id = "reference"
    prompt_version = REFERENCE_VERSION
    threshold = 0.5
    cacheable = False  # a few regexes: cheaper than the cache
    needs_example = True

    def __init__(self, tool_tags: dict[str, str] | None = None, calculate: Callable[[str], str] | None = None,
                 calculator_tool: str = "calculator") -> None:
        self.tool_tags = dict(tool_tags or DEFAULT_TOOL_TAGS)
        self.calculator_tool = calculator_tool
        self._calculate = calculate

    @staticmethod
    def _solution(example: Example | None) -> str:
        if example is None:
            raise ValueError("the reference judge needs each step's example (with the worked solution)")
        solution = example.metadata.get("solution")
        if not isinstance(solution, str):
            raise ValueError(f"example {example.id}: the reference judge needs metadata['solution'] (GSM8K worked answer)")
        return solution

    def _score_result(self, result: str | None, example: Example | None) -> float:
        value = parse_number(result)
        refs = reference_values(self._solution(example))
        return float(value is not None and any(matches_reference(value, r) for r in refs))

    def _score_answer(self, answer: str | None, example: Example | None) -> float:
        if example is None:
            raise ValueError("the reference judge needs each step's example (with the gold answer)")
        return NumericJudge().score(answer, example.answer)

    def score_step(self, step: Step, example: Example | None) -> float:
        """1.0 or 0.0 for one recorded step, using the tool result stored in its observation."""
        if step.action.kind == "answer":
            return self._score_answer(step.action.answer, example)
        if step.action.kind == "invalid" or step.tool_error or step.observation is None:
            return 0.0
        return self._score_result(step.observation.rpartition(" -> ")[2], example)

    def judge_steps(self, items: list[StepToJudge]) -> list[Judgement]:
        scores = [self.score_step(it.step, it.example) for it in items]
        return [Judgement(self.judge_id, verdict_for(s, self.threshold), s, self.prompt_version) for s in scores]

    def score_actions(self, states: Sequence[list[dict[str, str]]], action_texts: Sequence[str],
                      examples: Sequence[Example], actions: Sequence[Action] | None = None) -> list[float]:
        """1.0/0.0 for each sampled action text (states are unused); calculator calls are evaluated here."""
        if not len(states) == len(action_texts) == len(examples):
            raise ValueError("states, action_texts and examples must have the same length")
        scores = []
        for i, (text, example) in enumerate(zip(action_texts, examples)):
            action = actions[i] if actions is not None else parse_action(text, self.tool_tags)
            if action.kind == "answer":
                scores.append(self._score_answer(action.answer, example))
            elif action.kind == "tool" and action.tool == self.calculator_tool:
                if self._calculate is None:
                    self._calculate = _default_calculate()
                try:
                    result = str(self._calculate(action.query or ""))
                except Exception:  # noqa: BLE001 - a failing call is a bad step, whatever the tool raised
                    result = None
                scores.append(self._score_result(result, example))
            else:
                scores.append(0.0)
        return scores


# ----------------------------------------------------------------------------------------------------
# Judging trajectories


def judgement_key(judge_id: str, prompt_version: str, state: list[dict[str, str]], step_text: str) -> str:
    """The content hash a step judgement is cached under; a judge whose verdict depends on anything else
    (the gold data, say) must say so in its prompt version or set ``cacheable = False``."""
    payload = json.dumps([judge_id, prompt_version, state, step_text], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgementStore(Protocol):
    """Where judgements are cached, such as :class:`swirl_lightning.filtering.JudgementCache`."""

    def get_many(self, keys: Iterable[str]) -> dict[str, Judgement]:
        """The stored judgements among ``keys``."""

    def put_many(self, judgements: dict[str, Judgement]) -> None:
        """Store judgements by key."""


def _set_judgement(step: Step, judgement: Judgement) -> None:
    step.judgements = [j for j in step.judgements if j.judge != judgement.judge] + [judgement]


def judge_trajectories(trajectories: Sequence[Trajectory], judge: StepJudge, examples: dict[str, Example] | None = None,
                       cache: JudgementStore | None = None, batch_size: int = 16, progress: bool = True) -> dict[str, int]:
    """Judge every step of every trajectory, adding each judgement to ``step.judgements`` (replacing an
    earlier one by the same judge id). States come from :func:`~swirl_lightning.trajectory.decompose`.

    Cached judgements are reused (their verdict re-derived with the judge's current ``threshold``); new
    ones are stored after each batch, so an interrupted run keeps its work. Returns the counts
    ``steps``, ``from_cache`` and ``judged``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    needs_example = getattr(judge, "needs_example", False)
    use_cache = cache is not None and getattr(judge, "cacheable", True)
    threshold = getattr(judge, "threshold", None)
    pending: list[tuple[Step, StepToJudge, str | None]] = []
    for trajectory in trajectories:
        example = (examples or {}).get(trajectory.example_id)
        if needs_example and example is None:
            raise ValueError(f"judge {judge.judge_id} needs the examples (name the task); none for trajectory {trajectory.key}")
        for sub in decompose(trajectory):
            key = judgement_key(judge.judge_id, judge.prompt_version, sub.state, sub.target.text) if use_cache else None
            pending.append((sub.target, StepToJudge(sub.state, sub.target, example), key))
    cached = cache.get_many(k for _, _, k in pending if k) if use_cache else {}
    todo = []
    for step, item, key in pending:
        if key in cached:
            hit = cached[key]
            verdict = hit.verdict if threshold is None else verdict_for(hit.score, threshold)
            _set_judgement(step, Judgement(hit.judge, verdict, hit.score, hit.prompt_version))
        else:
            todo.append((step, item, key))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"judging ({judge.judge_id})", unit="step", disable=not (progress and todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        judgements = judge.judge_steps([item for _, item, _ in chunk])
        if len(judgements) != len(chunk):
            raise RuntimeError(f"judge {judge.judge_id} returned {len(judgements)} judgements for {len(chunk)} steps")
        for (step, _, _), judgement in zip(chunk, judgements):
            _set_judgement(step, judgement)
        if use_cache:
            cache.put_many({key: j for (_, _, key), j in zip(chunk, judgements) if key})
        bar.update(len(chunk))
    bar.close()
    return {"steps": len(pending), "from_cache": len(pending) - len(todo), "judged": len(todo)}


# ----------------------------------------------------------------------------------------------------
# Registration


@hookimpl
def register_judges(register: Callable[..., None]) -> None:
    """Register the built-in judges."""
    register(ProcessJudge, name="process")
    register(ReferenceJudge, name="reference")
    register(NumericJudge, name="numeric")
    register(ExactMatchJudge, name="qa_em")
    register(TokenF1Judge, name="qa_f1")
    register(LLMGrader, name="grader")


def available_judges(pm: Any = None) -> dict[str, Callable[..., Any]]:
    """Judge name -> factory, from every plugin's ``register_judges`` (the built-ins always included).

    ``pm`` defaults to :func:`swirl_lightning.plugins.get_plugin_manager`. Each plugin's hook is called on
    its own, so that a name registered twice is an error naming both plugins.
    """
    from swirl_lightning.plugins import get_plugin_manager, plugin_origin

    pm = pm if pm is not None else get_plugin_manager()
    hooks = [(plugin_origin(pm, impl.plugin).describe(impl.plugin_name), impl.function)
             for impl in pm.hook.register_judges.get_hookimpls() if not (impl.hookwrapper or impl.wrapper)]
    if not pm.is_registered(sys.modules[__name__]):
        hooks.insert(0, ("swirl_lightning.judges (built-in)", register_judges))
    factories: dict[str, Callable[..., Any]] = {}
    owners: dict[str, str] = {}
    for owner, hook in hooks:
        def register(factory: Callable[..., Any], name: str | None = None, _owner: str = owner) -> None:
            judge_name = name or getattr(factory, "__name__", None)
            if not callable(factory) or not judge_name:
                raise ValueError(f"{_owner}: register(factory, name=...) expects a callable factory and a name")
            if judge_name in factories:
                raise ValueError(f"judge {judge_name!r} is registered by both {owners[judge_name]} and {_owner}")
            factories[judge_name], owners[judge_name] = factory, _owner

        hook(register=register)
    return factories


def make_judge(name: str, pm: Any = None, **options: Any) -> Any:
    """A judge by registered name, built with ``options`` (e.g. ``make_judge("process", model="tiny-random")``)."""
    factories = available_judges(pm)
    if name not in factories:
        raise ValueError(f"judge: expected one of {', '.join(sorted(factories))}, got {name!r}")
    return factories[name](**options)
