"""Auxiliary losses of the long-form heads (InterAQA, GDLT).

- `attention_gram_kl`: InterAQA's attention loss. For the self- and the cross-attention
  outputs A_S, A_C (B, Q, D) of one decoder layer, G = A A^T / D (B, Q, Q); the loss is the
  row-wise KL(softmax(G_C) || softmax(G_S)), summed over rows and batch (the authors'
  `KLDivLoss(reduction="sum")`). Gradients reach both sides.
- `hardest_triplet_loss`: GDLT's batch-hard triplet loss with cosine distance: for every
  anchor, the farthest same-label and the nearest other-label embedding, hinge with a margin,
  mean over anchors.

The DAE likelihood loss that `score_dist.kind: dae` uses (`longform_dae_loss`) lives in
`aqa_pipeline.train.losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention_gram_kl(self_out: Tensor, cross_out: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL(softmax(G_C) || softmax(G_S)) summed over real rows and the batch.

    self_out, cross_out: (B, Q, D) attention outputs; mask: (B, Q) bool, True = real query.
    Padded queries are left out as rows and as columns. Computed in float32.
    """
    a_s, a_c = self_out.float(), cross_out.float()
    d = a_s.shape[-1]
    g_s = a_s @ a_s.transpose(1, 2) / d
    g_c = a_c @ a_c.transpose(1, 2) / d
    if mask is None:
        log_p_s = F.log_softmax(g_s, dim=-1)
        log_p_c = F.log_softmax(g_c, dim=-1)
        return (log_p_c.exp() * (log_p_c - log_p_s)).sum()
    cols = mask[:, None, :]
    log_p_s = F.log_softmax(g_s.masked_fill(~cols, float("-inf")), dim=-1)
    log_p_c = F.log_softmax(g_c.masked_fill(~cols, float("-inf")), dim=-1)
    # zero the padded columns before combining (-inf - -inf would poison the gradients)
    keep = cols & mask[:, :, None]
    log_p_s = torch.where(keep, log_p_s, 0.0)
    log_p_c = torch.where(keep, log_p_c, 0.0)
    return torch.where(keep, log_p_c.exp() * (log_p_c - log_p_s), 0.0).sum()


def cosine_distance_matrix(x: Tensor) -> Tensor:
    """1 - cos(x_i, x_j) for the rows of x (N, C) -> (N, N), in [0, 2]."""
    xn = F.normalize(x.float(), dim=-1)
    return 1.0 - xn @ xn.T


def hardest_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Batch-hard triplet loss with cosine distance.

    embeddings (N, C), labels (N,) int. Per anchor: relu(max d(a, p) - min d(a, n) + margin)
    over positives p != a with the same label and negatives n with another label; mean over
    anchors. An anchor without positives counts d(a, p) = 0, one without negatives is skipped.
    """
    dist = cosine_distance_matrix(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    hardest_pos = torch.where(positive, dist, 0.0).amax(dim=1)
    hardest_neg = torch.where(negative, dist, float("inf")).amin(dim=1)
    has_neg = negative.any(dim=1)
    if not bool(has_neg.any()):
        return dist.sum() * 0.0
    losses = F.relu(hardest_pos - hardest_neg + margin)
    return losses[has_neg].mean()
