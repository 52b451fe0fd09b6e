"""A weights file in the standard FID Inception-v3 format, with random values (no download possible here)."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # build the network without loading anything, then save its (randomly initialised) state dict
    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for key, value in state.items():  # give BatchNorm non-trivial statistics so features are not degenerate
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            value.normal_(0, 0.1)
    torch.save(state, path)
    return path
