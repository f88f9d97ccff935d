"""The video Transformer: which tokens each kind of attention lets a token see, shapes, parameter checks."""

from __future__ import annotations

import pytest
import torch

from dlforge.constraints import ParameterError
from dlforge.nets.vision.video_vit import SpaceTimeBlock, VideoViT, over_time

FRAMES, PLACES, DIM = 3, 4, 16


def reach(layer, x: torch.Tensor, frame: int, place: int) -> torch.Tensor:
    """(frames, places) booleans: which outputs change when the token at (frame, place) changes."""
    changed = x.clone()
    changed[:, frame, place] += torch.randn(DIM)  # not a constant: LayerNorm would take it away
    with torch.no_grad():
        return (layer(changed) - layer(x)).abs().amax(dim=(0, 3)) > 1e-6


@pytest.fixture
def tokens() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, FRAMES, PLACES, DIM)


def test_space_only_attention_keeps_frames_apart(tokens):
    block = SpaceTimeBlock(DIM, heads=2, mlp_ratio=2.0, dropout=0.0, head_dim=None, attention="space_only")
    expected = torch.zeros(FRAMES, PLACES, dtype=torch.bool)
    expected[1] = True  # the whole of its own frame, nothing of the others
    assert torch.equal(reach(block, tokens, 1, 2), expected)


def test_divided_attention_sees_its_place_through_time_then_its_frame(tokens):
    block = SpaceTimeBlock(DIM, heads=2, mlp_ratio=2.0, dropout=0.0, head_dim=None, attention="divided")
    through_time = torch.zeros(FRAMES, PLACES, dtype=torch.bool)
    through_time[:, 2] = True  # the temporal step alone: the same place in every frame
    assert torch.equal(reach(lambda x: over_time(x, block.temporal), tokens, 1, 2), through_time)
    assert reach(block, tokens, 1, 2).all()  # then each frame's tokens pass it on to their frame


def test_joint_attention_sees_the_whole_clip(tokens):
    block = SpaceTimeBlock(DIM, heads=2, mlp_ratio=2.0, dropout=0.0, head_dim=None, attention="joint")
    assert reach(block, tokens, 1, 2).all()


@pytest.mark.parametrize("attention", ["joint", "divided", "space_only"])
def test_clips_become_one_feature_vector_each(attention):
    net = VideoViT(frames=4, image_size=16, patch_size=4, tubelet=2, in_channels=3, dim=32, attention=attention)
    assert net(torch.rand(5, 4, 3, 16, 16)).shape == (5, net.out_features)


def test_tubelet_must_divide_the_frames():
    with pytest.raises(ParameterError, match="tubelet: 3 does not divide frames=8"):
        VideoViT(frames=8, tubelet=3)


def test_subtracting_the_mean_frame_leaves_only_what_moves():
    torch.manual_seed(0)
    clips, background = torch.rand(2, 4, 3, 16, 16), torch.rand(2, 1, 3, 16, 16)  # the same in every frame
    for subtract, unchanged in ((True, True), (False, False)):
        net = VideoViT(frames=4, image_size=16, patch_size=4, tubelet=2, in_channels=3, subtract_mean_frame=subtract)
        with torch.no_grad():
            assert torch.allclose(net(clips + background), net(clips), atol=1e-5) == unchanged
