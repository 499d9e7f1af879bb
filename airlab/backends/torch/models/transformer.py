"""Decoder-only causal Transformer language model, after nanoGPT (see airlab.specs.transformer).

    idx (B, T) -> token embedding + position embedding (B, T, C) -> dropout
      -> n_layer x Block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
      -> ln_f -> lm_head (weight tied to the token embedding unless tie_weights is false) -> logits (B, T, vocab)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from airlab.backends.torch.shard import Dropout
from airlab.specs.base import DataInfo
from airlab.specs.transformer import TransformerSpec


class CausalSelfAttention(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.n_head = spec.n_head
        self.dropout = spec.dropout
        self.c_attn = nn.Linear(spec.n_embd, 3 * spec.n_embd, bias=spec.bias)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(spec.n_embd, spec.n_embd, bias=spec.bias)  # residual output projection
        self.resid_dropout = Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C) heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.c_fc = nn.Linear(spec.n_embd, spec.mlp_ratio * spec.n_embd, bias=spec.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(spec.mlp_ratio * spec.n_embd, spec.n_embd, bias=spec.bias)  # residual output projection
        self.dropout = Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, ratio*C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.ln_1 = nn.LayerNorm(spec.n_embd, bias=spec.bias)
        self.attn = CausalSelfAttention(spec)
        self.ln_2 = nn.LayerNorm(spec.n_embd, bias=spec.bias)
        self.mlp = MLP(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, spec: TransformerSpec, vocab_size: int):
        super().__init__()
        self.context_length = spec.context_length
        self.vocab_size = vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, spec.n_embd),
                wpe=nn.Embedding(spec.context_length, spec.n_embd),
                drop=Dropout(spec.dropout),
                h=nn.ModuleList([Block(spec) for _ in range(spec.n_layer)]),
                ln_f=nn.LayerNorm(spec.n_embd, bias=spec.bias),
            )
        )
        self.lm_head = nn.Linear(spec.n_embd, vocab_size, bias=False)
        if spec.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying: one (vocab, C) matrix

        # nanoGPT init: N(0, 0.02) everywhere, residual projections scaled down by depth (GPT-2 paper)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * spec.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.context_length:
            raise ValueError(f"Expected sequences of at most context_length={self.context_length} tokens. Received: T={T}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        return self.lm_head(x)  # (B, T, vocab)

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by sampling max_new_tokens tokens; returns (B, T + max_new_tokens).
        Call in eval mode. temperature <= 0 picks the most likely token (greedy)."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.context_length :]  # (B, <=context) crop to the context window
            logits = self(idx_cond)[:, -1, :]  # (B, vocab) at the last position
            if temperature <= 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k)
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)  # (B, vocab)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T + 1)
        return idx


def build(spec: TransformerSpec, info: DataInfo) -> GPT:
    spec.check_data(info)  # ValueError without vocab_size
    return GPT(spec, vocab_size=info.vocab_size)
