"""Task hooks: what differs between segmentation, detection and pretraining for the trainer and the evaluate CLI.

The registry is :mod:`vlt_training.tasks.registry`; each task registers itself from its own module
(:mod:`.segmentation`, :mod:`.detection`, :mod:`.pretraining`), imported on first use.
"""
