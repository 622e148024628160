"""Hugging Face transformers outside training and sampling: a model's tokenizer with its
chat template, and the one-time conversion of a GGUF into a transformers folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Messages, render_chat


def quiet_transformers() -> None:
    """Progress bars of transformers' own loading/saving stay off the user's screen."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class HFTokenizer:
    """A transformers tokenizer as the core's ``Tokenizer``."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        quiet_transformers()
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.eos_id = self.tok.eos_token_id

    def render(self, messages: Messages) -> str:
        return render_chat(self.tok, messages)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def close(self) -> None:
        pass


def gguf_to_hf(gguf: Path, out: Path) -> None:
    """Write ``gguf`` as a plain transformers folder at ``out`` (every tensor dequantized
    to fp32; the tokenizer and its chat template kept)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    src_dir, fname = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
        m = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname,
                                                 dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"transformers cannot load {gguf.name} ({exc}); pass the model's "
                        "Hugging Face folder or hub id instead") from exc
    # The GGUF quantizer only describes the source file; the saved folder is plain weights.
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
