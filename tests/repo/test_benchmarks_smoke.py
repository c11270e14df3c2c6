"""The benchmark scripts' smoke modes run (tiny model, seconds), so the scripts cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(script: str, out: Path, *args: str) -> dict:
    """Run ``benchmarks/<script> --smoke`` writing ``out``; return its JSON result (its PNG must exist too)."""
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args, "--out", str(out)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert out.with_suffix(".png").stat().st_size > 0
    return json.loads(out.read_text())


def test_generation_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("generation_bench.py", tmp_path / "generation.json")
    # The references first; every in-process arm at both batch sizes, on the same 4 questions.
    assert [(run["arm"], run["batch_size"]) for run in result["runs"]] == [
        (arm, size) for arm in ("engine_fp32", "engine_fp32_lora", "engine_bf16") for size in (1, 4)]
    assert all(run["generated_tokens"] > 0 and run["trajectories"] == 4 and run["tokens_per_second"] > 0
               for run in result["runs"])
    by_arm = {(run["arm"], run["batch_size"]): run for run in result["runs"]}
    assert by_arm["engine_fp32", 4]["greedy_reference"] is None  # the reference itself
    bf16 = by_arm["engine_bf16", 4]
    assert bf16["dtype"] == "bfloat16" and bf16["greedy_reference"] == "engine_fp32"
    assert 0 <= bf16["greedy_trajectory_agreement"] <= bf16["greedy_action_agreement"] <= 1
    assert by_arm["engine_fp32_lora", 4]["adapter_mode"].startswith("unmerged")
    assert result["servers"] == {} and result["quiet_check"]["waits"] == 0


@pytest.mark.slow  # (make test-slow) the default suite tests these paths in rollout/test_vllm.py and the smokes above
def test_generation_benchmark_smoke_on_vllm(vllm_server, tmp_path):
    """With the test run's vLLM server (float32): its greedy actions equal the in-process engine's, token for token."""
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("generation_bench.py", tmp_path / "generation.json", "--base-url", vllm_server.base_url)
    (served,) = [run for run in result["runs"] if run["arm"] == "vllm_fp32"]
    (reference,) = [run for run in result["runs"]
                    if run["model"] == "smollm2-135m-instruct" and run["arm"] == "engine_fp32"]
    assert (served["backend"], served["dtype"], served["model"]) == ("vllm", "float32", "smollm2-135m-instruct")
    assert served["greedy_reference"] == "engine_fp32" and served["greedy_actions_compared"] >= 2
    assert served["greedy_action_agreement"] == 1.0 and served["greedy_trajectory_agreement"] == 1.0
    assert served["generated_tokens"] > 0 and served["tokens_per_second"] > 0 and reference["generated_tokens"] > 0
    assert result["servers"]["base_url"]["managed"] is False and served["server_managed"] is False


def test_memory_benchmark_smoke(tmp_path):
    result = run_smoke("memory_bench.py", tmp_path / "memory.json", "--threads", "1")
    runs = {run["workload"]: run for run in result["runs"]}
    assert list(runs) == ["swirl", "sft", "validate"] and result["commit"]
    for name in ("swirl", "sft"):
        run = runs[name]
        assert run["rss_after_load_mb"] > 0 and run["peak_rss_mb"] <= run["peak_rss_with_profiled_step_mb"]
        assert run["top_allocations_last_step"] and all(row["self_allocated_mb"] > 0
                                                        for row in run["top_allocations_last_step"])
        assert run["heap"].startswith("freed blocks")
    assert runs["validate"]["questions"] == 4 and runs["validate"]["largest_kv_cache_mb"] > 0


def test_sft_speed_benchmark_smoke(tmp_path):
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = run_smoke("sft_speed_bench.py", tmp_path / "sft_speed.json", "--threads", "1")
    ours, trl = result["sides"]
    assert (ours["side"], trl["side"]) == ("swirl-lightning", "trl")
    assert result["data"]["trajectories"] == 4 and result["data"]["steps_mean"] >= 5
    # One row per trajectory against one sample per step: TRL's samples hold every state again.
    assert ours["rows"] == 4 and trl["rows"] == round(4 * result["data"]["steps_mean"])
    assert trl["real_tokens"] > 2 * ours["real_tokens"]
    assert all(side["epoch_seconds"] > 0 and side["losses"] and side["peak_memory_mb"] > 0 for side in result["sides"])


def test_rl_speed_benchmark_smoke(tmp_path):
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = run_smoke("rl_speed_bench.py", tmp_path / "rl_speed.json", "--threads", "1")
    assert [(r["side"], r["group_size"]) for r in result["runs"]] == [("swirl-lightning", 2), ("trl", 2)]
    for run in result["runs"]:
        assert run["states"] == 4 and run["sampled_actions"] == 8  # 2 steps x 2 states x G=2
        assert run["generation_seconds"] > 0 and run["judging_seconds"] > 0 and run["update_seconds"] > 0
    assert list(result["speedup_states_per_second"]) == ["swirl-lightning / trl"] and "CUDA" in result["trl_vllm"]


@pytest.mark.slow  # (make test-slow) the default suite tests these paths in rollout/test_vllm.py and the smokes above
def test_rl_speed_benchmark_smoke_on_vllm(vllm_server, tmp_path):
    """The ``swirl-lightning (vllm)`` side on the test run's server: LoRA rank 8, the adapter synced every step."""
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = run_smoke("rl_speed_bench.py", tmp_path / "rl_speed.json", "--threads", "1", "--sides", "ours_vllm",
                       "--base-url", vllm_server.base_url)
    (run,) = result["runs"]
    assert (run["side"], run["engine"], run["lora_r"], result["model"]) == (
        "swirl-lightning (vllm)", "vllm", 8, "smollm2-135m-instruct")
    assert run["states"] == 4 and run["sampled_actions"] == 8 and run["adapter_syncs"] == 2  # one sync per step
    assert run["generation_seconds"] > run["adapter_sync_seconds"] > 0 and run["update_seconds"] > 0
    assert result["vllm_server"] == {"managed": False, "base_url": vllm_server.base_url}


@pytest.mark.slow  # (make test-slow) the default suite tests these paths in rollout/test_vllm.py and the smokes above
def test_gpu_vllm_benchmark_smoke(tmp_path):
    """The GPU script, on the CPU through both benchmarks' smoke modes: one result holding both."""
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("gpu_vllm_bench.py", tmp_path / "gpu_vllm.json")
    assert list(result["parts"]) == ["generation", "rl_speed"] and result["smoke"]
    assert [r["side"] for r in result["parts"]["rl_speed"]["runs"]] == ["swirl-lightning (lora)", "trl (lora)"]
    assert all(v["tokens_per_second"] > 0 for v in result["summary"]["generation"].values())
    assert all(v["seconds_per_step"] > 0 for v in result["summary"]["rl_speed"].values())
    assert "rl_speed_bench.py --smoke" in result["commands"]["rl_speed"]


def test_learning_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("learning_bench.py", tmp_path / "learning.json", "--run", str(tmp_path / "run"))
    assert list(result["arms"]) == ["warm", "sft", "swirl", "swirl_step"]
    assert result["data"]["trajectories"] == 4 and result["data"]["kept_process"]["trajectories"] == 4  # filter none
    assert 0 <= result["data"]["questions_solved_by_a_sample"] <= result["data"]["questions"]
    for name in ("sft", "swirl", "swirl_step"):
        arm = result["arms"][name]
        # Every arm validates at the same optimizer steps and starts from the warm start's validation.
        assert [v["step"] for v in arm["validations"]] == [0, 1, 2] and arm["complete"]
        assert arm["validations"][0] == result["arms"]["warm"]["validations"][0]
        assert all(v["questions"] == 2 and 0 <= v["accuracy_ci95"][0] <= v["accuracy_ci95"][1] <= 1
                   for v in arm["validations"])
        assert arm["training_curves"]["train/loss"] and [p["step"] for p in arm["probe"]] == [0, 1, 2]
        assert (arm["probe_first_vs_last"]["first_step"], arm["probe_first_vs_last"]["last_step"]) == (0, 2)
        assert set(arm["final_vs_warm"]) == {"at_step", "gained", "lost", "mcnemar_exact_p"}
    assert set(result["arms"]["swirl"]["final_vs_sft"]) == {"gained", "lost", "mcnemar_exact_p"}
    assert result["arms"]["swirl"]["training_curves"]["train/reward_mean"]
    assert result["held_out"] == {"held_out_questions": 2, "overlap_generated": 0}
    assert result["step_good_judge"].startswith("reference-v")
    assert [c.split()[1] for c in result["stage_commands"]] == ["generate", "filter", "filter", "filter", "validate",
                                                                 "fit", "fit", "fit"]
    # A second call finds every stage done and only writes the report again.
    again = run_smoke("learning_bench.py", tmp_path / "again.json", "--run", str(tmp_path / "run"))
    assert again["stage_seconds"] == {} and again["arms"]["swirl"]["validations"] == \
        result["arms"]["swirl"]["validations"]


def test_learning_benchmark_on_generated_worlds_smoke(tmp_path):
    """The worlds comparison with its controls: the search tool in each question's own world, hop counts reported,
    the held-out worlds checked against every training question's world."""
    pytest.importorskip("swirl_search", reason="the search plugin is not installed")
    from swirl_lightning.core.tasks.worlds import write_worlds
    from swirl_lightning.core.tasks.worlds.generator import WorldSettings

    for split in ("train", "validation"):
        write_worlds(tmp_path / "worlds" / split, split, 1, WorldSettings(questions=4, hops=(1, 2)))
    result = run_smoke("learning_bench.py", tmp_path / "learning.json", "--task.name", "worlds", "--run",
                       str(tmp_path / "run"), "--task.data_path", str(tmp_path / "worlds"), "--arms", "swirl_step", "random")
    assert list(result["arms"]) == ["warm", "swirl_step", "random"]
    assert result["arms"]["random"]["reward"] == "random" and result["arms"]["swirl_step"]["reward"] == "reference"
    last = result["arms"]["random"]["validations"][-1]
    assert set(last["by_hops"]) == {"1", "2"} and sum(h["questions"] for h in last["by_hops"].values()) == 2
    assert 0 <= last["repeated_query_rate"] <= 1
    assert result["held_out"]["overlap_worlds"] == 0 and result["held_out"]["training_questions_from_held_out_seeds"] == 0
    assert [c.split()[1] for c in result["stage_commands"]] == ["generate", "filter", "validate", "fit", "fit"]
    assert "--judge.name random" in result["stage_commands"][-1]


def test_rl_sanity_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("rl_sanity_bench.py", tmp_path / "rl_sanity.json", "--run", str(tmp_path / "run"))
    assert [p["step"] for p in result["probe"]] == [0, 1, 2]  # before the first update, every step, after the last
    assert all(p["states"] == result["pool"]["states"] and 0 <= p["reward_mean"] <= 1 for p in result["probe"])
    rise = result["first_vs_last"]
    assert rise["rise"] == pytest.approx(result["probe"][-1]["reward_mean"] - result["probe"][0]["reward_mean"])
    assert rise["states_up"] + rise["states_down"] + rise["states_same"] == result["pool"]["states"]
    assert [c.split()[1] for c in result["stage_commands"]] == ["generate", "filter", "fit"]


def test_significance(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from significance import exact_sign_test_p, paired_rise, wilson_interval

    low, high = wilson_interval(3, 200)  # 1.5%: the normal interval would go below 0
    assert 0.004 < low < 0.006 and 0.042 < high < 0.044
    assert wilson_interval(0, 16)[0] == 0.0 and 0.19 < wilson_interval(0, 16)[1] < 0.2
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    assert exact_sign_test_p(4, 1) == 0.375  # 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6/32
    assert exact_sign_test_p(5, 0) == 0.0625 and exact_sign_test_p(0, 0) == 1.0 and exact_sign_test_p(10, 0) < 0.002
    rise = paired_rise([0.0, 0.5, 0.25], [0.5, 0.5, 0.75])
    assert rise["rise"] == pytest.approx(1 / 3) and (rise["states_up"], rise["states_down"], rise["states_same"]) == (2, 0, 1)
    assert rise["rise_ci95"][0] <= rise["rise"] <= rise["rise_ci95"][1] and rise["states_left_out"] == 0
    # A state the judge gave no verdict at (the probe writes null) is left out, not read as 0.
    rise = paired_rise([None, 0.5, 0.25], [1.0, None, 0.75])
    assert rise["rise"] == 0.5 and rise["states_left_out"] == 2
    assert paired_rise([None], [0.5])["rise"] is None


def test_learning_benchmark_runs_only_the_named_stages(monkeypatch, tmp_path):
    """``--only`` splits the comparison into lanes (one per core): each runs its stages, in the order given by --arms."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import learning_bench

    ran: list[str] = []
    monkeypatch.setattr(learning_bench.Stages, "run", lambda self, name, argv, done, marker=False: ran.append(name))
    monkeypatch.setattr(learning_bench.Stages, "run_fit", lambda self, name, argv, root: ran.append(name))
    args = learning_bench.parse_args(["--run", str(tmp_path), "--arms", "swirl_step", "swirl",
                                      "--only", "fit_swirl", "fit_swirl_step"])
    learning_bench.Benchmark(args).run()
    assert ran == ["fit_swirl_step", "fit_swirl"]
    ran.clear()
    learning_bench.Benchmark(learning_bench.parse_args(["--run", str(tmp_path)])).run()
    assert ran == ["generate", "filter_process_outcome", "filter_process", "filter_step", "validate_warm",
                   "fit_sft", "fit_swirl", "fit_swirl_step"]
    ran.clear()  # the no-filter arm runs when named: every state of every trajectory
    learning_bench.Benchmark(learning_bench.parse_args(["--run", str(tmp_path), "--arms", "swirl_none"])).run()
    assert ran == ["generate", "filter_none", "validate_warm", "fit_swirl_none"]
    with pytest.raises(SystemExit):  # a misspelt stage would otherwise run nothing, silently
        learning_bench.parse_args(["--only", "fit_swirlstep"])


def test_learning_benchmark_validates_final_weights_the_fit_did_not(monkeypatch, tmp_path):
    """A fit killed in its last validation has trained to the end (last.ckpt) but resuming it would stop at once:
    the benchmark validates that checkpoint instead, and only then."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import learning_bench

    ran: dict[str, list[str]] = {}
    monkeypatch.setattr(learning_bench.Stages, "run", lambda self, name, argv, done, marker=False: ran.update({name: argv}))
    monkeypatch.setattr(learning_bench.Stages, "run_fit", lambda self, name, argv, root: None)
    args = learning_bench.parse_args(["--run", str(tmp_path), "--arms", "swirl_step", "--steps", "40",
                                      "--only", "fit_swirl_step"])
    learning_bench.Benchmark(args).run()
    assert ran == {}  # no checkpoint: the fit has not trained, nothing to validate
    last = tmp_path / "swirl_step" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.touch()
    rollouts = tmp_path / "swirl_step" / "tb" / "gsm8k_calculator" / "fit" / "version_0" / "rollouts"
    rollouts.mkdir(parents=True)
    (rollouts / "val-step000020.jsonl").touch()
    learning_bench.Benchmark(args).run()
    argv = ran["validate_swirl_step"]
    assert argv[0] == "validate" and argv[argv.index("--ckpt_path") + 1] == str(last)
    assert argv[argv.index("--data.train.path") + 1].endswith("kept_step.jsonl")  # the arm's own options
    ran.clear()
    (rollouts / "val-step000040.jsonl").touch()  # the fit validated its final weights itself
    learning_bench.Benchmark(args).run()
    assert ran == {}


def test_judge_agreement_benchmark_smoke(tmp_path):
    result = run_smoke("judge_agreement_bench.py", tmp_path / "judge.json")
    # Reference trajectories with a wrong final answer: GOOD calculator steps and BAD answers, two of each.
    assert result["steps"] == 4 and len(result["scores"]["GOOD"]) == len(result["scores"]["BAD"]) == 2
    assert result["pool"]["valid_steps_bad"] == 3 and result["pool"]["valid_steps_good"] >= 3
    assert 0 <= result["auc"] <= 1 and result["auc_ci95"][0] <= result["auc_ci95"][1]
    assert result["judge_id"] == "process:tiny-random"


def test_judge_agreement_benchmark_smoke_with_a_served_judge(tmp_path):
    result = run_smoke("judge_agreement_bench.py", tmp_path / "served.json", "--judge.name", "served")
    # A stub server that calls the made-up wrong answers BAD and everything else GOOD: full agreement.
    assert result["judge"] == "served" and result["judge_id"] == "served:stub" and result["steps"] == 4
    assert result["verdicts_by_reference"] == {"GOOD": {"GOOD": 2, "BAD": 0, "FAILED": 0},
                                               "BAD": {"GOOD": 0, "BAD": 2, "FAILED": 0}}
    assert result["verdict_rate"] == 1.0 and result["accuracy_on_verdicts"] == 1.0 and result["auc_on_verdicts"] == 1.0
    low, high = result["accuracy_ci95"]
    assert 0 < low < 1 == high
    assert [run["concurrency"] for run in result["throughput"]] == [1, 4]
    assert all(run["steps"] == 4 and run["steps_per_s"] > 0 and run["usage"]["requests"] == 4
               for run in result["throughput"])


def test_roc_auc(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from judge_agreement_bench import roc_auc

    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and roc_auc([0.1], [0.9]) == 0.0
    assert roc_auc([0.5, 0.5], [0.5, 0.5]) == 0.5  # ties count half
    assert roc_auc([0.9, 0.3], [0.5, 0.1]) == 0.75


def test_learning_benchmark_judges_stored_rollouts_again(monkeypatch, tmp_path):
    """One result's step GOOD rates come from one judge version: rollouts an older judge scored (here: v1 called a
    repeated right calculation GOOD) are judged again by this checkout's reference judge."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import learning_bench
    from swirl_lightning.core.prompts import observation
    from swirl_lightning.core.tasks.gsm8k import reference_values
    from swirl_lightning.core.trajectory import Action, Judgement, Step, Trajectory, write_jsonl

    examples = learning_bench.held_out_examples("gsm8k", None)
    example = next(iter(examples.values()))
    value = reference_values(example.metadata["solution"])[0]

    def calculation() -> Step:
        stored = Judgement("reference", "GOOD", 1.0, prompt_version="reference-v1")
        return Step(f"<math_exp>{value}</math_exp>", Action("tool", tool="calculator", tag="math_exp", query=value),
                    observation=observation(value, value), judgements=[stored])

    rollout = Trajectory(example.id, 0, [{"role": "user", "content": example.question}],
                         steps=[calculation(), calculation()], outcome=0.0, gold_answer=example.answer)
    write_jsonl(tmp_path / "val-step000000.jsonl", [rollout])
    figures, outcomes = learning_bench.score_rollouts(tmp_path / "val-step000000.jsonl", examples)
    assert figures["step_good_rate"] == 0.5 and outcomes == {example.id: False}  # the repeat is no progress now


def test_transfer_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_search", reason="the search plugin is not installed")
    result = run_smoke("transfer_bench.py", tmp_path / "transfer.json", "--run", str(tmp_path / "run"))
    assert set(result["sets"]) == {"hotpotqa", "4hop"}
    assert all(p["questions"] == 2 and 0 <= p["accuracy"] <= 1 for s in result["sets"].values() for p in s.values())
    assert [c.split()[1] for c in result["stage_commands"]] == ["data", "validate", "validate"]
    assert "--world.hops '[4]'" in result["stage_commands"][0] and "--task.max_actions 6" in result["stage_commands"][1]
