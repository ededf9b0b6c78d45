"""What makes a process start faster: the tiny model built once, plain tokenizers loaded without transformers'
model registry, no scikit-learn or scipy through transformers, a running Ray cluster joined."""
import subprocess
import sys

from omegaconf import OmegaConf

from rlsys.actors.cluster import join_address
from rlsys.data.task import tokenizer_texts
from rlsys.models.tiny import build_tiny_model


def test_the_tiny_model_is_built_once_and_copied_after(tmp_path, monkeypatch):
    monkeypatch.setenv("RLSYS_CACHE_DIR", str(tmp_path / "cache"))
    texts = tokenizer_texts()[:200]
    first = build_tiny_model(tmp_path / "a", texts=texts, seed=3)
    cached = list((tmp_path / "cache" / "tiny").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").exists()
    second = build_tiny_model(tmp_path / "b", texts=texts, seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    build_tiny_model(tmp_path / "c", texts=texts, seed=4)  # other settings: another model
    assert len(list((tmp_path / "cache" / "tiny").iterdir())) == 2

    monkeypatch.setenv("RLSYS_CACHE_DIR", "")  # no cache: built where asked
    build_tiny_model(tmp_path / "d", texts=texts, seed=3)
    assert (tmp_path / "d" / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_a_plain_tokenizer_loads_without_the_model_registry_and_encodes_the_same(tmp_path):
    folder = build_tiny_model(tmp_path / "m", texts=tokenizer_texts()[:200])
    code = f"""
import sys
from rlsys.models.builders import load_causal_lm, load_tokenizer
import torch
tok = load_tokenizer({str(folder)!r})
assert "transformers.models.auto.modeling_auto" not in sys.modules, "the tokenizer imported the model registry"
load_causal_lm({str(folder)!r}, dtype=torch.float32)
assert "sklearn" not in sys.modules and "scipy" not in sys.modules, "transformers imported scikit-learn or scipy"
from transformers import AutoTokenizer
auto = AutoTokenizer.from_pretrained({str(folder)!r})
chat = [{{"role": "user", "content": "What is 37 + 48?"}}]
assert tok.apply_chat_template(chat, add_generation_prompt=True) == auto.apply_chat_template(chat, add_generation_prompt=True)
assert tok("12 + 345 = 357").input_ids == auto("12 + 345 = 357").input_ids
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_which_cluster_a_job_joins():
    def cluster(**kw):
        return OmegaConf.create({"address": None, "num_cpus": None, "num_gpus": None, **kw})

    assert join_address(cluster(address="ray://head:10001")) == "ray://head:10001"
    assert join_address(cluster(address="local")) is None
    assert join_address(cluster(num_cpus=4)) is None  # a job that sizes its own Ray starts it
    assert join_address(cluster(num_gpus=0)) is None
