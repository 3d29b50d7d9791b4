"""Chat template and tokenizer: messages in, prompt token ids out (pure, engine-agnostic).

Every engine renders prompts here, so every engine refuses the same input the same way:
text the tokenizer cannot encode (it would become ``<unk>`` tokens and the model would
answer a question nobody asked) raises a :class:`~langchain_latts.LattsValueError`
naming the characters. Byte-level tokenizers of real models encode everything, so the
check only ever fires for tokenizers with an ``unk`` token, such as the built-in model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_latts.errors import LattsValueError

__all__ = ["render_chat", "unencodable_characters"]


def unencodable_characters(tokenizer: Any, text: str) -> list[str]:
    """The distinct characters of ``text`` that ``tokenizer`` turns into its unknown token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    ids = tokenizer.encode(text, add_special_tokens=False)
    if unk not in ids:
        return []
    return [c for c in dict.fromkeys(text) if unk in tokenizer.encode(c, add_special_tokens=False)]


def render_chat(tokenizer: Any, messages: Sequence[dict[str, Any]],
                tools: Sequence[dict[str, Any]] | None = None,
                template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
    """Apply the chat template (with the offered ``tools`` and the template's own options,
    e.g. ``{"enable_thinking": False}``) and tokenize."""
    text = tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None, tokenize=False,
                                         add_generation_prompt=True, **dict(template_kwargs or {}))
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        content = "".join(str(m.get("content") or "") for m in messages)
        bad = unencodable_characters(tokenizer, content) or unencodable_characters(tokenizer, text)
        raise LattsValueError.bad(
            "messages", "".join(bad), "contain characters this model's tokenizer cannot encode",
            "The built-in model reads printable ASCII only (digits, + and -, letters, punctuation): write "
            "'-' for a minus sign and leave out emoji and other symbols, or use a model whose tokenizer "
            "encodes them.",
        )
    return ids
