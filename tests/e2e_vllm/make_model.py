"""Writes a random-weight Llama model and a locally trained tokenizer into a directory vLLM can serve.

Run with the vLLM virtualenv's python (transformers and tokenizers live there, not in the project's .venv):
`python make_model.py OUT_DIR [--hidden 128 --layers 2 --heads 2 --vocab 512 --seed 0]`. No hub access: the
config is built in code and the tokenizer is trained on generated words, so the same arguments always give
the same files. Head size is hidden/heads and must be one vLLM's CPU attention supports (32, 64, 80, ...).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]


def _corpus(seed: int, words: int) -> list[str]:
    """Generated lower-case 'words' so the BPE trainer has something to merge; no data set needed."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(2000)]
    return [" ".join(rng.choice(vocab) for _ in range(32)) for _ in range(words // 32)]


def write_tokenizer(out: Path, vocab_size: int, seed: int) -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(_corpus(seed, 50_000), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_max_length=1 << 20
    )
    fast.save_pretrained(out)


def write_model(out: Path, args: argparse.Namespace, vocab_size: int) -> None:
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=args.max_len,
        # A wide init makes greedy decoding decisive (no near-ties), so any wrong KV shows in the output.
        initializer_range=args.init_std,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = None  # never stop early: outputs have a fixed length
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument("--init-std", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.hidden % args.heads:
        parser.error("--hidden must be a multiple of --heads")
    args.out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(args.out, args.vocab, args.seed)
    vocab_size = len(PreTrainedTokenizerFast.from_pretrained(args.out))
    write_model(args.out, args, vocab_size)
    print(f"model written to {args.out} (vocab {vocab_size})")


if __name__ == "__main__":
    main()
