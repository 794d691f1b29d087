"""Tiny random models, built on the spot, so the whole pipeline runs offline.

Used by the smoke mode of the jobs and by the tests. Their outputs are noise:
the teacher is a randomly initialised 2-layer Llama. Its output head is tilted
toward a small answer vocabulary (``Answer:``, the label names, a newline) so
that its samples contain both parseable answers and abstentions, and the
whole labelling path (prompt, engine, parsing, votes) is exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

SMOKE_WARNING = (
    "SMOKE MODE: the teacher is a tiny randomly initialised model built on the spot. "
    "Its labels are noise; use it to see the pipeline run, never to train a real student."
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_BASE_WORDS = (
    "the a of to and in is that it for on with as was by at from this be are or an has have "
    "text label labels answer reasoning reason step classify sentiment company profit loss "
    "sales rose fell market shares quarter year growth positive negative neutral question"
).split()


def classification_answer_tokens(label_names: Sequence[str]) -> list[str]:
    """What a classification answer is made of: ``Answer:``, a newline, each label name."""
    return [" Answer:", "\n", *[f" {name}" for name in label_names]]


def build_tiny_teacher(path: str | Path, label_names: Sequence[str], corpus: Sequence[str] = (),
                       answer_tokens: Optional[Sequence[str]] = None) -> Path:
    """Write a random tiny Llama with a BPE tokenizer and chat template to ``path``.

    ``answer_tokens``: strings (one token each) its output head favours; by default a classification
    answer's (``Answer:``, a newline, each label name). The task types give theirs
    (:meth:`~pipeline.tasks.base.TaskType.smoke_answers`). Hidden size 128 with 2 heads gives
    head_dim 64, the smallest the CPU attention kernels of vLLM accept.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    answer_tokens = list(classification_answer_tokens(label_names) if answer_tokens is None else answer_tokens)
    if (path / "config.json").exists() and _same_labels(path, label_names, answer_tokens):
        return path
    path.mkdir(parents=True, exist_ok=True)

    specials = ["<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    training_text = list(corpus) + [" ".join(_BASE_WORDS)] * 4 + list(label_names)
    bpe.train_from_iterator(training_text, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    tokenizer.add_tokens(answer_tokens)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    _tilt_output_head(model, [tokenizer.convert_tokens_to_ids(t) for t in answer_tokens])
    model.save_pretrained(path, safe_serialization=True)
    (path / "raydistill_smoke.json").write_text(json.dumps({"labels": list(label_names),
                                                            "answer_tokens": answer_tokens}))
    return path


def _tilt_output_head(model, favoured_ids: list[int]) -> None:
    """Make ``favoured_ids`` likely whatever the input.

    Dimension 0 of every token embedding is a large constant and no layer
    writes to it, so after the final norm it is a steady positive feature; the
    favoured tokens read it with a large weight.
    """
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 8.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        head = model.lm_head.weight
        head[:, 0] = 0.0
        head[favoured_ids, 0] = 1.5


def _same_labels(path: Path, label_names: Sequence[str], answer_tokens: list[str]) -> bool:
    marker = path / "raydistill_smoke.json"
    if not marker.exists():
        return False
    built = json.loads(marker.read_text())
    default = classification_answer_tokens(label_names)  # what a teacher built before answer_tokens favours
    return built.get("labels") == list(label_names) and built.get("answer_tokens", default) == answer_tokens


def build_tiny_student(path: str | Path, corpus: Sequence[str] = ()) -> Path:
    """Write a random tiny BERT (2 layers, hidden 32) with a WordPiece tokenizer to ``path``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials, show_progress=False)
    wordpiece.train_from_iterator(list(corpus) + [" ".join(_BASE_WORDS)] * 4, trainer=trainer)
    cls_id, sep_id = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return path
