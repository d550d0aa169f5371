import pytest
import torch

from synthloop.errors import InputError
from synthloop.models import create_model, list_models, register_model
from synthloop.models.registry import _MODELS


def _inputs(name, gen):
    """Example inputs for each registered model (a new model must add its own here)."""
    b = 4
    return {
        "mnist_classifier": lambda: (torch.rand(b, 1, 40, 40, generator=gen),),
        "mnist_classifier_deep": lambda: (torch.rand(b, 1, 40, 40, generator=gen),),
        "mnist_synthesizer": lambda: (torch.rand(b, 1, 40, 40, generator=gen),),
        "scene_synthesizer": lambda: (torch.rand(b, 4, 128, 128, generator=gen), torch.rand(b, 3, 128, 128, generator=gen)),
        "patch_discriminator": lambda: (torch.rand(b, 3, 64, 64, generator=gen),),
        "resnet_generator": lambda: (torch.rand(b, 1, 28, 28, generator=gen),),
        "pixelda_generator": lambda: (torch.rand(b, 1, 28, 28, generator=gen), torch.rand(b, 10, generator=gen) * 2 - 1),
        "small_resnet": lambda: (torch.rand(b, 1, 28, 28, generator=gen),),
        "small_detector": lambda: (
            list(torch.rand(2, 3, 128, 128, generator=gen)),
            [{"boxes": torch.tensor([[10.0, 12.0, 30.0, 50.0]]), "labels": torch.tensor([3])}] * 2,
        ),
    }[name]()


def test_expected_models_are_registered():
    assert list_models() == sorted(
        ["mnist_classifier", "mnist_classifier_deep", "mnist_synthesizer", "scene_synthesizer", "patch_discriminator"]
        + ["resnet_generator", "pixelda_generator", "small_resnet"]
        + ["small_detector"]
    )


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_a_finite_gradient(name, gen):
    with torch.random.fork_rng():
        torch.manual_seed(0)  # dropout masks
        model = create_model(name).train()
        out = model(*_inputs(name, gen))
    tensors = list(out.values()) if isinstance(out, dict) else [out]
    assert all(torch.isfinite(t).all() for t in tensors)
    loss = sum(t.float().square().mean() for t in tensors if t.requires_grad)
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert any((p.grad != 0).any() for p in model.parameters())


def test_create_model_passes_kwargs():
    model = create_model("mnist_classifier", num_classes=4)
    assert model(torch.rand(2, 1, 40, 40)).shape == (2, 4)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(InputError, match="unknown model 'resnet'; registered models: mnist_classifier, "):
        create_model("resnet")


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'mnist_classifier' is already registered"):
        register_model("mnist_classifier")(torch.nn.Identity)
    name = "test_registry_identity"
    try:
        register_model(name)(torch.nn.Identity)
        assert isinstance(create_model(name), torch.nn.Identity)
        with pytest.raises(ValueError, match="already registered"):
            register_model(name)(torch.nn.Identity)
    finally:
        _MODELS.pop(name, None)
    with pytest.raises(ValueError, match="non-empty"):
        register_model("")
