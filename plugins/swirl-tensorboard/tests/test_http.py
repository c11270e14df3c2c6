"""The plugin's routes, through a real `tensorboard` process on a short run's logs: every figure checked against the
rollout files themselves."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

import pytest

from swirl_lightning.core.trajectory import read_trajectories
from swirl_lightning.rollout.view import trajectory_view

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

PREFIX = "/data/plugin/trajectories"


def get(base: str, route: str, **params) -> tuple[int, dict]:
    url = f"{base}{PREFIX}/{route}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sources(base: str) -> dict[tuple[str, str], dict]:
    status, data = get(base, "runs")
    assert status == 200
    return {(s["run"], s["file"]): s for run in data["runs"] for s in run["sources"]}


def evaluation(logdir, stage: str):
    """(run, file, trajectories) of the last validation of the run of ``stage`` (validate or fit)."""
    (folder,) = [p for p in logdir.rglob("version_*") if p.parent.name == stage]
    path = sorted((folder / "rollouts").glob("val-step*.jsonl"))[-1]
    return folder.relative_to(logdir).as_posix(), f"rollouts/{path.name}", read_trajectories(path)


def test_tensorboard_lists_the_dashboard_from_the_entry_point(tensorboard):
    with urllib.request.urlopen(f"{tensorboard}/data/plugins_listing", timeout=30) as response:
        listing = json.loads(response.read())
    entry = listing["trajectories"]
    assert entry["enabled"] and entry["tab_name"] == "Trajectories"
    assert entry["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{PREFIX}/index.js"}


def test_the_frontend_is_served_by_the_plugin_and_fetches_nothing_from_outside(tensorboard):
    for name, mime in (("index.js", "text/javascript"), ("boot.js", "text/javascript"), ("style.css", "text/css"),
                       ("index.html", "text/html")):
        with urllib.request.urlopen(f"{tensorboard}{PREFIX}/{name}", timeout=30) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith(mime), name
        assert "http://" not in body.replace("http://127.0.0.1", "") and "https://" not in body, name


def test_runs_lists_each_evaluation_with_its_step_count_and_accuracy(tensorboard, logdir):
    listed = sources(tensorboard)
    for stage, step in (("validate", 0), ("fit", 2)):
        run, file, trajectories = evaluation(logdir, stage)
        source = listed[(run, file)]
        assert (source["stage"], source["step"], source["trajectories"]) == ("val", step, len(trajectories))
        scored = [t.outcome for t in trajectories if t.outcome is not None]
        assert source["accuracy"] == pytest.approx(sum(scored) / len(scored))


def test_trajectories_filters_and_counts(tensorboard, logdir):
    run, file, trajectories = evaluation(logdir, "fit")
    status, everything = get(tensorboard, "trajectories", run=run, file=file)
    assert status == 200 and everything["total"] == everything["shown"] == len(trajectories)
    assert [(r["example_id"], r["sample_index"]) for r in everything["rows"]] == [t.key for t in trajectories]
    assert all(r["gold_answer"] == t.gold_answer and r["gold_answer"] for r, t in zip(everything["rows"], trajectories))
    results = Counter("not scored" if t.outcome is None else "correct" if t.outcome >= 1 else "wrong" for t in trajectories)
    assert everything["counts"]["result"] == dict(results)
    assert everything["counts"]["steps"] == dict(Counter(str(len(t.steps)) for t in trajectories))
    invalid = Counter("yes" if any(s.action.kind == "invalid" for s in t.steps) else "no" for t in trajectories)
    assert everything["counts"]["invalid"] == dict(invalid)
    for facet, value in (("result", "correct"), ("result", "wrong"), ("invalid", "yes"), ("invalid", "no"),
                         ("steps", str(len(trajectories[0].steps)))):
        status, filtered = get(tensorboard, "trajectories", run=run, file=file, **{facet: value})
        assert status == 200
        assert filtered["shown"] == everything["counts"][facet].get(value, 0) == len(filtered["rows"]), (facet, value)
        assert all(row["facets"][facet] == value for row in filtered["rows"])
    status, error = get(tensorboard, "trajectories", run=run, file=file, colour="red")
    assert status == 200  # unknown parameters are not filters: ignored
    status, error = get(tensorboard, "trajectories", run=run, file="rollouts/nothing.jsonl")
    assert status == 404 and "no trajectories" in error["error"]
    status, error = get(tensorboard, "trajectories", run=run)
    assert status == 400 and "file" in error["error"]


def test_trajectory_is_the_view_swirl_data_show_prints(tensorboard, logdir):
    run, file, trajectories = evaluation(logdir, "fit")
    status, data = get(tensorboard, "trajectory", run=run, file=file, index=len(trajectories) - 1)
    assert status == 200
    assert data["view"] == json.loads(json.dumps(trajectory_view(trajectories[-1])))
    view = data["view"]
    assert view["gold_answer"] == trajectories[-1].gold_answer and view["question"]
    assert [s["index"] for s in view["step_views"]] == list(range(1, len(trajectories[-1].steps) + 1))
    assert get(tensorboard, "trajectory", run=run, file=file, index=len(trajectories))[0] == 404
    assert get(tensorboard, "trajectory", run=run, file=file, index="first")[0] == 400


def test_compare_and_pair_put_one_question_side_by_side_at_two_steps(tensorboard, logdir):
    before_run, before_file, before = evaluation(logdir, "validate")
    after_run, after_file, after = evaluation(logdir, "fit")
    both = dict(run=before_run, file=before_file, other_run=after_run, other_file=after_file)
    status, compared = get(tensorboard, "compare", **both)
    assert status == 200 and compared["before"]["step"] == 0 and compared["after"]["step"] == 2
    # Asked the other way round, the earlier step is still "before".
    swapped = dict(run=after_run, file=after_file, other_run=before_run, other_file=before_file)
    assert get(tensorboard, "compare", **swapped)[1]["before"] == compared["before"]
    assert compared["pairs"] == len({t.key for t in before} & {t.key for t in after}) > 0
    assert sum(compared["changes"].values()) == compared["shown"] == len(compared["rows"])
    row = compared["rows"][0]
    status, pair = get(tensorboard, "pair", **both, example_id=row["example_id"], sample_index=row["sample_index"])
    assert status == 200
    assert pair["before"]["example_id"] == pair["after"]["example_id"] == row["example_id"]
    assert pair["before"]["question"] == pair["after"]["question"] and pair["before"]["gold_answer"]
    assert pair["change"] == row["change"]
    assert len(pair["differences"]["steps"]) == max(len(pair["before"]["step_views"]), len(pair["after"]["step_views"]))
    assert get(tensorboard, "pair", **both, example_id="no-such-question", sample_index=0)[0] == 404


def test_find_resolves_the_link_training_writes_into_the_text_tab(tensorboard, logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, file, _ = evaluation(logdir, "fit")
    events = EventAccumulator(str(logdir / run), size_guidance={"tensors": 0})
    events.Reload()
    (table,) = events.Tensors("val/rollouts/text_summary")
    markdown = table.tensor_proto.string_val[0].decode()
    link = markdown.split("](", 1)[1].split(")", 1)[0]
    page, query = link.split("?", 1)
    assert page == "data/plugin/trajectories/index.html"
    status, found = get(tensorboard, "find", path=urllib.parse.parse_qs(query)["find"][0])
    assert status == 200 and (found["run"], found["file"]) == (run, file)
