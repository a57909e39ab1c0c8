"""The Mask2Former decoder's inference path (attention masks projected at low resolution) against training's."""

import torch
import torch.nn.functional as F

from vlt_training.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder
from vlt_training.modeling.transformer_decoder.mask2former_decoder import MASK_BIAS


def _decoder_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    decoder = MultiScaleMaskedTransformerDecoder(in_channels=16, num_classes=5, hidden_dim=16, num_queries=6,
                                                 nheads=2, dim_feedforward=32, dec_layers=4, mask_dim=16).double()
    features = [torch.randn(2, 16, h, w, dtype=torch.float64) for h, w in ((2, 4), (4, 8), (8, 16))]
    mask_features = torch.randn(2, 16, 16, 32, dtype=torch.float64)
    return decoder, features, mask_features


def test_low_resolution_attention_bias_equals_resized_full_masks():
    decoder, _, mask_features = _decoder_and_inputs()
    output = torch.randn(6, 2, 16, dtype=torch.float64)  # Q, B, C
    size = (4, 8)
    low_res = {size: F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)}
    _, full_masks, bias_train = decoder._predict(output, mask_features, size)
    cls, no_masks, bias_eval = decoder._predict(output, mask_features, size, low_res)
    assert full_masks.shape == (2, 6, 16, 32) and no_masks is None
    assert bias_eval.shape == (2 * 2, 6, 4 * 8)
    # both masked and attended pixels occur, so equality is not the trivial all-or-nothing case
    assert (bias_train == 0).any() and (bias_train == MASK_BIAS).any()
    torch.testing.assert_close(bias_eval, bias_train)


def test_eval_forward_matches_train_forward_and_drops_aux_outputs():
    decoder, features, mask_features = _decoder_and_inputs(1)
    trained = decoder.train()(features, mask_features)
    assert len(trained["aux_outputs"]) == 4 and all(a["pred_masks"].shape == (2, 6, 16, 32)
                                                   for a in trained["aux_outputs"])
    inferred = decoder.eval()(features, mask_features)
    assert inferred["aux_outputs"] == []
    torch.testing.assert_close(inferred["pred_logits"], trained["pred_logits"])
    torch.testing.assert_close(inferred["pred_masks"], trained["pred_masks"])
