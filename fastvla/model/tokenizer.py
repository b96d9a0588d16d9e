"""A small WordPiece tokenizer built locally (no hub download) for the tiny presets.

Whole words from a robot-manipulation vocabulary get one token each; any other word is spelled with
character pieces (``re`` ``##d``), so no instruction is ever unknown. The vocabulary is deterministic, so a
tokenizer rebuilt later matches a saved model.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

#: Special tokens of every FastVLA tokenizer (the model adds visual, state and action tokens as embeddings).
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}

_WORD_LINES = (
    "a an the this that it its to of on onto in into at from with and or then up down top bottom left right",
    "front back behind near far next beside between above below over under inside outside middle center",
    "pick place put push pull move reach grasp grab lift lower drop release open close stack unstack slide",
    "rotate turn press touch insert remove take bring set hold go stop align point toward towards away",
    "cube cubes block blocks box boxes object objects target goal marker area zone region spot location",
    "table bin tray plate bowl cup mug drawer door button lid peg hole shelf gripper arm robot hand",
    "red green blue yellow orange purple pink white black gray grey brown cyan magenta small large big",
    "one two three first second third other another all both each same different",
    "task instruction please carefully slowly quickly what should action take do",
)
_WORDS = [word for line in _WORD_LINES for word in line.split()]


def tiny_vocabulary() -> list[str]:
    """Deterministic vocabulary: special tokens, characters, continuation pieces, then whole words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = list(SPECIAL_TOKENS.values()) + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    seen = set(vocab)
    for word in _WORDS:
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return vocab


def build_tiny_tokenizer(model_max_length: int = 64):
    """A ``PreTrainedTokenizerFast`` over :func:`tiny_vocabulary` (lower-cased WordPiece, BOS prepended).

    Args:
        model_max_length: longest instruction the processor will produce.

    Returns:
        A transformers fast tokenizer that saves and loads with ``save_pretrained``/``AutoTokenizer``.
    """
    vocab = {token: i for i, token in enumerate(tiny_vocabulary())}
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token=SPECIAL_TOKENS["unk_token"], max_input_chars_per_word=50)
    )
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **SPECIAL_TOKENS)


def tiny_vocab_size() -> int:
    """Size of the tiny vocabulary rounded up to a multiple of 64 (embedding rows)."""
    n = len(tiny_vocabulary())
    return (n + 63) // 64 * 64
