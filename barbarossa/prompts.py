"""The one prompt template, used for training, evaluation and exported model cards.

Train/inference prompt mismatch is the most common silent fine-tuning bug, so
every caller renders prompts and builds label masks through this module.
"""

from __future__ import annotations

IGNORE_INDEX = -100


def pad_rows(rows: list[list[int]], value: int, side: str = "right") -> list[list[int]]:
    """Rows of token ids, labels or mask bits padded with `value` to the longest row."""
    width = max(len(r) for r in rows)
    return [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]

PREAMBLE = (
    "Aşağıda bir tapşırığı təsvir edən təlimat verilib. "
    "Tapşırığı lazımi şəkildə yerinə yetirən cavab yazın."
)
PREAMBLE_WITH_INPUT = (
    "Aşağıda bir tapşırığı təsvir edən təlimat və əlavə məlumat verən giriş verilib. "
    "Tapşırığı lazımi şəkildə yerinə yetirən cavab yazın."
)
INSTRUCTION_HEADER = "### Təlimat:"
INPUT_HEADER = "### Giriş:"
RESPONSE_HEADER = "### Cavab:"


def render_prompt(instruction: str, input: str = "") -> str:
    """Alpaca-style prompt with Azerbaijani headers; ends where the answer starts."""
    if input:
        return (
            f"{PREAMBLE_WITH_INPUT}\n\n{INSTRUCTION_HEADER}\n{instruction}\n\n"
            f"{INPUT_HEADER}\n{input}\n\n{RESPONSE_HEADER}\n"
        )
    return f"{PREAMBLE}\n\n{INSTRUCTION_HEADER}\n{instruction}\n\n{RESPONSE_HEADER}\n"


def encode_prompt(tokenizer, record: dict, task: str = "causal") -> list[int]:
    """Token ids of the prompt exactly as generation will see them.

    A decoder-only model continues the prompt, so a trailing EOS (added by some
    tokenizers) is removed; an encoder-decoder's encoder input keeps it.
    """
    ids = list(tokenizer(render_prompt(record["instruction"], record["input"]))["input_ids"])
    if task == "causal" and ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def encode_response(tokenizer, text: str) -> list[int]:
    """Response ids followed by EOS, the token generation stops on."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def build_example(
    tokenizer, record: dict, max_length: int, min_response_tokens: int = 8, task: str = "causal"
) -> dict | None:
    """input_ids and labels with the prompt masked: loss is on the response and EOS only.

    Causal LM: one sequence, prompt labels set to IGNORE_INDEX. A response that
    does not fit is cut at max_length (and loses its EOS); an example whose prompt
    leaves fewer than `min_response_tokens` is dropped (None). Seq2seq: the prompt
    is the encoder input and the labels are the decoder side, each up to max_length.
    """
    prompt = encode_prompt(tokenizer, record, task)
    response = encode_response(tokenizer, record["output"])
    if task == "seq2seq":
        if len(prompt) > max_length:
            return None
        return {"input_ids": prompt, "labels": response[:max_length]}
    room = max_length - len(prompt)
    if room < min(min_response_tokens, len(response)):
        return None
    response = response[:room]
    return {
        "input_ids": prompt + response,
        "labels": [IGNORE_INDEX] * len(prompt) + response,
    }


def cut_at_next_section(text: str) -> str:
    """An answer ends where the model starts a new '### ...:' section of the template.

    Short or young fine-tunes often keep writing the template after their answer;
    every model (base and tuned) is cut the same way before it is scored.
    """
    cut = text.find("\n### ")
    return (text if cut < 0 else text[:cut]).strip()


def show_masking(tokenizer, example: dict, task: str = "causal") -> str:
    """Decoded example with the masked prompt in «» — what the loss does not see."""
    labels = example["labels"]
    if task == "seq2seq":  # the prompt is the encoder input; every label is the answer
        return f"«{tokenizer.decode(example['input_ids'])}»{tokenizer.decode(labels)}"
    cut = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    masked = tokenizer.decode(example["input_ids"][:cut])
    trained = tokenizer.decode(example["input_ids"][cut:])
    return f"«{masked}»{trained}"


def masking_examples(tokenizer, records: list[dict], max_length: int, count: int = 2, task: str = "causal") -> list[str]:
    """The first `count` records that fit, decoded with the masked prompt marked (for the data card)."""
    shown = []
    for record in records:
        example = build_example(tokenizer, record, max_length, task=task)
        if example:
            shown.append(show_masking(tokenizer, example, task))
        if len(shown) == count:
            break
    return shown
