"""Tiny randomly initialised models of each family, for smoke runs and tests.

They are saved with `save_pretrained` and loaded back through the same
`from_pretrained` path a hub model takes, so a CPU test exercises the real
training and evaluation code of every family in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from barbarossa import languages
from barbarossa.config import PROJECT_ROOT
from barbarossa.data import prompts

VERSION = 4  # 4: the tokenizer learns every language pack's sample (2048 entries), not only Azerbaijani
EOS = "<|endoftext|>"
SAMPLES = "data/*_alpaca_sample.jsonl"  # every language pack's bundled sample (and the English one)


def _corpus() -> list[str]:
    """Each pack's template and sample, so a tiny model's tokens are words, not bytes, in every shipped language."""
    texts = []
    for sample in sorted(PROJECT_ROOT.glob(SAMPLES)):
        code = sample.name.split("_")[0]
        if (PROJECT_ROOT / "configs" / "languages" / f"{code}.toml").exists():
            template = prompts.template_of(languages.load(code))
            texts += [template.preamble, template.preamble_with_input, template.render("a", "b")]
        for line in sample.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [row["instruction"], row["input"], row["output"]]
    return texts


def build_tokenizer(vocab_size: int = 2048):  # five languages, two scripts: 1024 left most Kazakh rows past 192 tokens
    """Byte-level BPE trained on the bundled samples of every language pack (never fails on unseen text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=EOS)


def config_for(family: str, vocab_size: int):
    """A few-layer, narrow config of the family's own transformers config class."""
    import transformers as tf

    common = {"vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    builders = {
        "llama": lambda: tf.LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            **common,
        ),
        "mistral": lambda: tf.MistralConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        ),
        "gpt2": lambda: tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common),
        "gpt_neo": lambda: tf.GPTNeoConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            max_position_embeddings=512,
            attention_types=[[["global", "local"], 1]],
            window_size=64,
            **common,
        ),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            **common,
        ),
        "opt": lambda: tf.OPTConfig(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=64,
            max_position_embeddings=512,
            **common,
        ),
        "bloom": lambda: tf.BloomConfig(hidden_size=64, n_layer=2, n_head=4, **common),
        "mpt": lambda: tf.MptConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=512, **common),
        "stablelm": lambda: tf.StableLmConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        ),
        "t5": lambda: tf.T5Config(
            d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, decoder_start_token_id=0, **common
        ),
        "deci": lambda: tf.LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        ),
    }
    if family not in builders:
        raise ValueError(f"no tiny config for family {family!r}; known: {', '.join(sorted(builders))}")
    return builders[family]()


# DeciLM ships its modelling code on the hub (trust_remote_code). The tiny stand-in
# keeps that shape: a config.json whose auto_map points at code files in the model
# folder, so loading goes through transformers' remote-code path. The architecture
# itself is LLaMA's (real DeciLM varies the KV heads per layer).
DECI_CONFIG_PY = """from transformers import LlamaConfig


class DeciConfig(LlamaConfig):
    model_type = "deci"
"""
DECI_MODELING_PY = """from transformers import LlamaForCausalLM

from .configuration_deci import DeciConfig


class DeciForCausalLM(LlamaForCausalLM):
    config_class = DeciConfig
"""


def _as_remote_code_deci(out: Path) -> None:
    (out / "configuration_deci.py").write_text(DECI_CONFIG_PY)
    (out / "modeling_deci.py").write_text(DECI_MODELING_PY)
    config = json.loads((out / "config.json").read_text())
    config.update(
        {
            "model_type": "deci",
            "architectures": ["DeciForCausalLM"],
            "auto_map": {
                "AutoConfig": "configuration_deci.DeciConfig",
                "AutoModelForCausalLM": "modeling_deci.DeciForCausalLM",
            },
        }
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))


def build(family: str, out: Path, seed: int = 0) -> Path:
    """Write a tiny random model of `family` and its tokenizer to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from barbarossa.models.families import get_family

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if get_family(family).task == "seq2seq" else AutoModelForCausalLM
    model = auto.from_config(config_for(family, len(tokenizer)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if family == "deci":
        _as_remote_code_deci(out)
    return out
