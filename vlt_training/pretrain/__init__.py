"""Vision-language pretraining on captioned procedural scenes.

- :mod:`~vlt_training.vocabulary`: class words and style words (shared with the FAMix prompts);
- :mod:`~vlt_training.pretrain.appearance`: the corpus's continuous appearance family;
- :mod:`~vlt_training.pretrain.captions`: captions from scene content and appearance;
- :mod:`~vlt_training.pretrain.corpus`: image-text pairs rendered on the fly, deterministic per seed;
- :mod:`~vlt_training.modeling.meta_arch.clip_pretrain`: open_clip CLIP + ClipLoss, and the vision-only control;
- :mod:`~vlt_training.tasks.pretraining`: the ``clip_pretrain`` / ``vision_pretrain`` task hooks;
- :mod:`~vlt_training.pretrain.report`: held-out retrieval and zero-shot figures beside chance.

Run it with ``python -m vlt_training.cli.pretrain --config config/pretrain/tiny_clip.yaml``.
"""
