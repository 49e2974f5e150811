"""The light adaptation: only the encoder's last layer learns, from features computed once."""

import torch

from rayemb_ros.geometry.volume import load_volume
from rayemb_ros.learning.checkpoint import load_encoder
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.head_tune import tune_head


def test_only_the_head_learns_and_its_loss_falls(coarse_ct):
    encoder, _ = load_encoder()
    body = {k: v.clone() for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    head = encoder.head.weight.detach().clone()
    config = TrainConfig(volumes=(str(coarse_ct),), batch=2, templates=3, points=16, tau=0.02, lr=3e-3,
                         landmark_pool=200, device="cpu")
    result = tune_head(encoder, load_volume(str(coarse_ct)), config, batches=1, steps=20, val_batches=1,
                       progress=False)
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in body.items())  # the body never moved
    assert not torch.equal(encoder.head.weight, head)
    assert result["loss_last"] < result["loss_first"], result  # it learns the batch it sees
    assert result["val_px_before"] >= 0 and result["val_px_after"] >= 0
