"""Word-level tokenizers built offline from a vocabulary, in the real transformers formats.

Real CLIP and T5 tokenizers give one token to a common word; tools that look at "the concept's
token" rely on that. These builders give the same property for a closed vocabulary (the toy
world's, or a test's) without any download: a CLIP-style word-level tokenizer (start and end
tokens, lower-casing) and a T5-style Unigram where each `▁word` outscores its letters (unknown
words still tokenize, letter by letter).

Not a tokenizer trainer: the vocabulary is given, nothing is learned from text.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, T5Tokenizer

CLIP_BOS, CLIP_EOS, CLIP_UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
_ALPHABET = string.ascii_lowercase + string.digits


def normalize_vocabulary(words: Iterable[str]) -> list[str]:
    """Lower-cased, de-duplicated single words in first-seen order (phrases are split)."""
    seen: dict[str, None] = {}
    for entry in words:
        for word in entry.lower().split():
            if not word.isalnum():
                raise ValueError(f"vocabulary word {word!r} must be letters or digits only")
            seen.setdefault(word, None)
    return list(seen)


def build_clip_tokenizer(
    words: Iterable[str], model_max_length: int = 77
) -> PreTrainedTokenizerFast:
    """A CLIP-style tokenizer (lower-casing, `<|startoftext|>` ... `<|endoftext|>`, padded with
    `<|endoftext|>`) whose model is word-level: every vocabulary word is exactly one token.

    A BPE whose merges spell each word cannot promise that (one word's merge can pre-empt
    another's), so the model is `WordLevel`; unknown words become `<|unk|>`.
    """
    vocab = {CLIP_BOS: 0, CLIP_EOS: 1, CLIP_UNK: 2}
    for word in normalize_vocabulary(words):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(WordLevel(vocab, unk_token=CLIP_UNK))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}",
        pair=f"{CLIP_BOS} $A {CLIP_EOS} $B {CLIP_EOS}",
        special_tokens=[(CLIP_BOS, 0), (CLIP_EOS, 1)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        unk_token=CLIP_UNK,
        model_max_length=model_max_length,
    )


def build_t5_tokenizer(
    words: Iterable[str], model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A T5-style Unigram tokenizer (lower-casing, `</s>` appended) with one token per word.

    Returned as the generic tokenizers-backed class: `T5Tokenizer.from_pretrained` rebuilds its
    pipeline from scratch and would drop the lower-casing normalizer on reload.
    """
    scores: list[tuple[str, float]] = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0), ("▁", -2.0)]
    scores += [("▁" + word, -1.0) for word in normalize_vocabulary(words)]
    scores += [(char, -10.0) for char in _ALPHABET]
    t5 = T5Tokenizer(vocab=scores, extra_ids=0)
    backend = t5.backend_tokenizer
    backend.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=T5_EOS,
        unk_token=T5_UNK,
        pad_token=T5_PAD,
        model_max_length=model_max_length,
    )
