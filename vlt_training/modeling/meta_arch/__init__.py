"""Meta-architectures: whole models assembled from backbone, neck and heads.

:mod:`.base` holds what every model shares (tower, normalisation, pyramid, training mode); :mod:`.vltseg`,
:mod:`.vltdet` and the multi-task :mod:`.vltmt` register their factories on import.
"""

from vlt_training.modeling.meta_arch import vltmt  # noqa: F401  (registers vltmt_*; imports vltseg and vltdet)
