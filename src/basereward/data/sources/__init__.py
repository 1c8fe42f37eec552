"""One adapter per public dataset: raw rows -> `PreferencePair` (no tensors, no tokenizers)."""

# Importing a module registers its adapters (see base.register).
from basereward.data.sources import (  # noqa: F401
    hh_rlhf,
    mm_rlhf,
    mmif,
    mmpr,
    olmo2,
    omni_align,
    rlaif_v,
    shp,
    swe_arena,
    tulu3,
    ultrafeedback,
)
