"""A weights file in the standard FID Inception-v3 format, with random convolutions (no download possible here).

BatchNorm statistics are measured on 9 demo photos: with random BatchNorm statistics the activations die out layer by
layer and every image gets the same pool3 features to ~1e-7, so FIDs are ~1e-14 and any comparison passes; measured
statistics keep each layer normalised, and the features of different photos differ by about half their norm."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import torch


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    from diffinpaint.data.demo import demo_crops

    torch.manual_seed(seed)
    # build the network without loading anything (random convolutions)
    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # cumulative average of the batch statistics
            module.reset_running_stats()
            module.momentum = None
            module.train()
    photos = np.stack([crop for _, _, crop in demo_crops(64, 1)])
    with torch.no_grad():
        net(torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous())
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, path)
    return path


calibrated_inception_weights = write_random_inception_weights  # the name tests/test_fid*.py use
