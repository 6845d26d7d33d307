"""Learning-rate schedule of the baseline: linear warm-up, then half a cosine down to zero."""
import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor for optimiser ``step`` (0-based): 0 -> 1 over ``warmup_steps``, then
    ``0.5 * (1 + cos(pi * progress))`` so that it reaches 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
