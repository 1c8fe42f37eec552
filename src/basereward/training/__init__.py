"""Training: `train()` (loop.py) as a recipe of named stages.

    loop.py        train(): the recipe
    stages.py      start, model, init_from, optimiser, resume, alignment, trunk cache, checkpoint, save
    fit.py         the optimisation loop (accumulation, cross-process metric sums, periodic work)
    plan.py        which pairs each micro-batch uses; the Dataset that collates them
    validation.py  validation through the Scorer and `metrics.pair_sums`
    checkpoint.py  resumable checkpoints (safetensors + JSON)
    data.py        `data.*` config -> training / validation pairs
    sweep.py       the learning-rate sweep
"""
