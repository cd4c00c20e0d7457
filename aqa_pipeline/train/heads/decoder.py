"""The parts of a transformer decoder layer shared by the GDLT and InterAQA heads."""

from __future__ import annotations

from torch import nn

from aqa_pipeline.train.heads.layers import Attention


class DecoderLayerParts(nn.Module):
    """Self-attention, cross-attention (`Attention`, nn.MultiheadAttention's parameters), a
    ReLU FFN, three LayerNorms and three dropouts (d = dim); subclasses decide where the norms
    and residuals go in forward()."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = Attention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(dropout) for _ in range(3))
