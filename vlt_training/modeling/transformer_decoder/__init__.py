"""Mask-classification transformer decoders."""

from vlt_training.modeling.transformer_decoder.mask2former_decoder import MultiScaleMaskedTransformerDecoder

__all__ = ["MultiScaleMaskedTransformerDecoder"]
