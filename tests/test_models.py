"""The from-scratch ResNets are the canonical architectures: same parameters, same outputs."""

import pytest
import torch
import torchvision

from core.common.errors import UserInputError
from core.engine.model.resnet import ARCHITECTURES, Bottleneck, build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_matches_torchvision_layer_for_layer(name):
    ours = build_model(name, num_classes=2)
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=2)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # Same keys and shapes: copying torchvision's (random) weights in must be strict.
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_bottleneck_has_inner_relus_and_last_bn():
    block = Bottleneck(256, 64)
    # Negative weights on positive input: the first ReLU must zero the branch, so the
    # block returns its identity. Without inner ReLUs the branch would not vanish.
    for conv in (block.conv1, block.conv2, block.conv3):
        torch.nn.init.constant_(conv.weight, -1.0)
    block.eval()
    x = torch.ones(1, 256, 8, 8)
    with torch.inference_mode():
        assert torch.equal(block(x), x)
    # The last BN scales the branch: zero its weight and a non-vanishing branch disappears.
    torch.nn.init.constant_(block.conv1.weight, 1.0)
    torch.nn.init.constant_(block.conv2.weight, 0.01)
    torch.nn.init.constant_(block.conv3.weight, 0.01)
    with torch.inference_mode():
        assert not torch.equal(block(x), x)
        torch.nn.init.zeros_(block.bn3.weight)
        torch.nn.init.zeros_(block.bn3.bias)
        assert torch.equal(block(x), x)


def test_num_classes_and_output_shape():
    model = build_model("resnet18", num_classes=3)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown architecture 'resnet34'"):
        build_model("resnet34")
