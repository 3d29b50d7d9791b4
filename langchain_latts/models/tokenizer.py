"""The character-level tokenizer shared by the shipped target and draft models.

Built with the ``tokenizers`` library: one token per printable ASCII character and
newline, plus the chat special tokens. Unknown characters map to ``<|unk|>``. Decoding
fuses tokens back without separators, so every task character round-trips exactly.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer"]

BOS, EOS, PAD, UNK = "<|bos|>", "<|end|>", "<|pad|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)

#: Every role opens with its own token; each message ends with ``<|end|>`` (the EOS).
#: Offered tools come first as ``<|system|>Tools: name(param, ...)<|end|>``; an assistant
#: tool call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the format of
#: :mod:`langchain_latts.tasks.formats`); a tool result is a ``<|tool|>`` message.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|system|>Tools: "
    "{% for tool in tools %}{% set f = tool.function if tool.function is defined else tool %}"
    "{{ f.name }}({% if f.parameters is defined and f.parameters.properties is defined %}"
    "{{ f.parameters.properties | list | join(', ') }}{% endif %})"
    "{% if not loop.last %}, {% endif %}{% endfor %}<|end|>{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] or '' }}"
    "{% if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}{% set f = call.function if call.function is defined else call %}"
    "<tool_call>{\"name\": \"{{ f.name }}\", \"arguments\": "
    "{% if f.arguments is string %}{{ f.arguments }}{% else %}{{ f.arguments | tojson }}{% endif %}}</tool_call>"
    "{% endfor %}{% endif %}"
    "<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _characters() -> list[str]:
    printable = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    return sorted(set(printable))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer (deterministic: same vocabulary and ids every time)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in _characters():
        vocab[char] = len(vocab)
    # BPE without merges over a character vocabulary splits text into characters.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
