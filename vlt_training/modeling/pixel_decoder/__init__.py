"""Pixel decoders: multi-scale feature encoders producing per-pixel mask features."""

from vlt_training.modeling.pixel_decoder.ms_deform_attn import SAMPLING_METHODS, MSDeformAttn, ms_deform_attn_core
from vlt_training.modeling.pixel_decoder.msdeform_pixel_decoder import MSDeformAttnPixelDecoder

__all__ = ["MSDeformAttn", "MSDeformAttnPixelDecoder", "SAMPLING_METHODS", "ms_deform_attn_core"]
