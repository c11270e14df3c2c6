"""An adapter trained on a merged warm start is exported alone (small enough to ship) and names its warm start;
loading it merges the warm start first, then the adapter: the very policy that trained."""

from __future__ import annotations

import json

import pytest
import torch

from swirl_lightning.core.config import PolicyConfig
from swirl_lightning.core.models import load_model, load_tokenizer, merged_adapter_of
from swirl_lightning.rollout.generate import load_policy
from swirl_lightning.training.config import ExportConfig, LoraConfig
from swirl_lightning.training.export import export_policy
from swirl_lightning.training.policy import ActionScorer, load_trainable_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_lora(model, seed: int):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, PeftLoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_an_adapter_on_a_warm_start_is_exported_alone_and_loads_as_it_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the warm start is named relative to the working folder, as a config names it
    random_lora(load_model("tiny-random"), seed=1).save_pretrained("warm")
    policy, lora = PolicyConfig(name="tiny-random", adapter="warm"), LoraConfig(r=2, alpha=4)
    lm = load_trainable_policy(policy, lora, "cpu")
    with torch.no_grad():  # a trained LoRA: its B matrices are no longer zero
        for name, parameter in lm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    export_policy(ActionScorer(lm), load_tokenizer("tiny-random"), tmp_path / "export", policy=policy, lora=lora,
                  export=ExportConfig(), objective="swirl")
    record = json.loads((tmp_path / "export" / "swirl_export.json").read_text())
    assert record["adapter_only"] and record["merged_adapter"] == "warm"
    assert not (tmp_path / "export" / "model.safetensors").exists()  # the LoRA only, not the merged model
    assert merged_adapter_of(tmp_path / "export") == "warm"

    ids = torch.tensor([[1, 5, 9, 30, 2]])
    loaded, _ = load_policy(PolicyConfig(name="tiny-random", adapter=str(tmp_path / "export")), "cpu")
    lm.eval()
    assert torch.allclose(logits(loaded, ids), logits(lm, ids), atol=1e-5)
    bare, _ = load_policy(PolicyConfig(name="tiny-random", adapter="warm"), "cpu")
    assert not torch.allclose(logits(bare, ids), logits(lm, ids), atol=1e-3)  # the new adapter matters


def test_a_missing_warm_start_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_lora(load_model("tiny-random"), seed=1).save_pretrained("adapter")
    (tmp_path / "adapter" / "swirl_export.json").write_text(json.dumps({"merged_adapter": "gone"}))
    with pytest.raises(FileNotFoundError, match="trained on the warm start 'gone'"):
        load_policy(PolicyConfig(name="tiny-random", adapter="adapter"), "cpu")


def test_the_shipped_swirl_policy_finds_its_warm_start_from_any_working_folder(tmp_path, monkeypatch):
    """adapters/worlds_swirl names its warm start relative to itself (``../worlds_warmup``), so that evaluating it
    works from any folder, not only the repository root."""
    from pathlib import Path

    adapters = Path(__file__).resolve().parents[2] / "adapters"
    monkeypatch.chdir(tmp_path)
    assert Path(merged_adapter_of(adapters / "worlds_swirl")).resolve() == (adapters / "worlds_warmup").resolve()
    assert merged_adapter_of(adapters / "worlds_warmup") is None


@pytest.mark.parametrize("text, message", [
    ('{"merged_adapter": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 100 levels"),
    ('{"merged_adapter": "warm", "merged_adapter": "other"}', "key 'merged_adapter' appears twice"),
    ('{"objective": 1' + "0" * 5000 + "}", "a number too large to read"),
    ('{"merged_adapter": "warm",\n "objective": }', ":2: invalid JSON"),
    ('["merged_adapter"]', "expected a JSON object"),
    ('{"merged_adapter": 7}', "merged_adapter: expected the warm start's path"),
], ids=["deep", "repeated key", "huge integer", "not JSON", "not an object", "not a path"])
def test_a_bad_export_record_is_a_one_line_error_naming_it(tmp_path, text, message):
    """swirl_export.json was read with plain json.loads: deep nesting was a RecursionError, a repeated key silently
    chose the warm start, and a list was an AttributeError (issue 27)."""
    (tmp_path / "swirl_export.json").write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        merged_adapter_of(tmp_path)
    assert str(error.value).startswith(str(tmp_path / "swirl_export.json")) and "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"files": ["a"], "files": ["b"]}', "\xff\xfe", "[1, 2]"])
def test_an_unreadable_export_record_lists_no_files_as_the_exports(tmp_path, text):
    """Nothing in a folder whose record cannot be read counts as an export's: fit then refuses to overwrite it."""
    from swirl_lightning.core.models import EXPORT_RECORD
    from swirl_lightning.training.export import exported_files

    (tmp_path / EXPORT_RECORD).write_bytes(text.encode("latin-1"))
    assert exported_files(tmp_path) == set()
