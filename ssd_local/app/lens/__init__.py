"""The lens: what SSD's decoding sees at each token of a text, under the base and the
tuned model. Pure numpy on logit rows the engines hand over (``backends``' scorers).

Per position (the distribution a completion token was drawn from), under a decoding
(T, top-k, top-p) applied in the paper's order:

- ``p_T = softmax(logits / T)``, the tempered distribution over the whole vocabulary;
- the truncation set ``S``: the k most likely tokens of ``p_T`` (k = 0: all), then the
  smallest run of them, most likely first, whose mass renormalised over those k reaches
  top-p (1.0: all). This is the set llama.cpp's temp -> top_k -> top_p chain and
  transformers' Temperature -> TopK -> TopP warpers keep (tests check both);
- kept mass = ``p_T(S)``; tail mass = 1 - kept mass: what truncation cuts away;
- head entropy = the entropy (nats) of ``p_T`` on ``S``, renormalised: the distribution
  the sampler really draws from; survivors = ``|S|``;
- full entropy ``H(p_T)`` and tail entropy, which split as
  ``H = h2(kept) + kept * H(head) + (1 - kept) * H(tail)``;
- the completion token's log-probability at T = 1, and whether it lies inside ``S``.

The rule for lock and fork positions, computed on the BASE model's ``p_T`` so that both
models are compared at the same positions (thresholds: ``LensConfig``):

- lock: the top token's tempered probability is >= 0.9. One right token; whatever else
  is left is the distractor tail SSD should cut. With top-p <= 0.9 the set is that token
  alone, so the tail mass there is 1 - p_top.
- fork: not a lock, and at least two tokens inside ``S`` each have tempered probability
  >= 0.1: at least two continuations the sampler really draws, each at least one time in
  ten. SSD should keep their spread, i.e. the head entropy.
- neither: the rest (one likely token short of a lock, or many small ones).

Why 0.9 and 0.1: they are complementary, so a lock leaves no other token at the fork
level and the classes never overlap (``LensConfig`` refuses lock + fork > 1). 0.9 calls
a position "one right token" while the tail it leaves (up to 10%) is still a visible
number; 0.1 counts an alternative drawn one time in ten as real, not noise.

``measure`` scores texts with one model, ``compare`` with both and summarises: mean tail
mass at lock positions and mean head entropy at fork positions (also counts, kept mass,
survivors), with 95% intervals on the differences from a bootstrap over texts.
"""
from .scoring import Comparison, Encoded, Measured, Text, compare, measure
from .stats import (FORK, LABELS, LOCK, NEITHER, Stats, h2, label, position_stats, summarise,
                    truncate)

__all__ = ["Comparison", "Encoded", "Measured", "Text", "compare", "measure", "FORK", "LABELS",
           "LOCK", "NEITHER", "Stats", "h2", "label", "position_stats", "summarise",
           "truncate"]
