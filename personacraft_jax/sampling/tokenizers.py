"""SDXL's two CLIP tokenizers (transformers, local files only) and a tiny character-level one for demos/tests.

Tokenisation follows diffusers' `encode_prompt`: pad to `model_max_length` (77) with the tokenizer's pad token,
truncate, for each of the two tokenizers.
"""

from __future__ import annotations

import json
import os
import pathlib
import string
from collections.abc import Sequence

import numpy as np

TINY_MAX_LENGTH = 77


class PromptTokenizer:
    """Both SDXL tokenizers: `tokenize(prompts)` -> (ids for CLIP-L, ids for bigG), each (B, 77) int32."""

    def __init__(self, tokenizer, tokenizer_2):
        self.tokenizers = (tokenizer, tokenizer_2)

    @classmethod
    def from_folders(cls, folder: str | os.PathLike, folder_2: str | os.PathLike) -> PromptTokenizer:
        from transformers import CLIPTokenizer

        out = []
        for path in (folder, folder_2):
            if not pathlib.Path(path).is_dir():
                raise FileNotFoundError(f"{path}: no tokenizer folder (nothing is downloaded)")
            out.append(CLIPTokenizer.from_pretrained(str(path), local_files_only=True))
        return cls(*out)

    @classmethod
    def from_sdxl_folder(cls, root: str | os.PathLike) -> PromptTokenizer:
        root = pathlib.Path(root)
        return cls.from_folders(root / "tokenizer", root / "tokenizer_2")

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for tok in self.tokenizers:
            ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
            out.append(np.asarray(ids, np.int32))
        return out[0], out[1]


def tiny_vocab() -> list[str]:
    """Specials first (<|startoftext|> = 0, <|endoftext|> = 1), then letters and letters + '</w>', then 'th'."""
    letters = list(string.ascii_lowercase)
    return ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters), "th", "the</w>"]


def write_tiny_tokenizer(folder: str | os.PathLike) -> pathlib.Path:
    """Writes a character-level CLIP BPE tokenizer (56 tokens) loadable by `CLIPTokenizer.from_pretrained`."""
    from transformers import CLIPTokenizer

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tiny_vocab())}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    tok = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=TINY_MAX_LENGTH
    )
    tok.save_pretrained(str(folder))
    return folder
