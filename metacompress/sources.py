"""Where ``apply`` gets a model from: a zoo id, or a Python file's factory (+ optional weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import nn

from metacompress.errors import MetacompressError


def load_model_source(source: str, weights: str | None = None) -> tuple[nn.Module, object, dict]:
    """Resolve ``--model``: returns (model, data splits, builder record).

    Args:
        source: a zoo id (``resnet-w16-d2-mnist``) or ``path/to/file.py:factory`` where
            ``factory()`` returns ``(model, data)`` and ``data`` has ``.train/.search/.test``
            splits with ``.x`` and ``.y`` (``metacompress.splits_from_arrays`` builds them).
        weights: optional safetensors state dict loaded into the factory's model (a saved
            model, loaded without executing pickled code).
    """
    if ".py:" in source:
        return _from_factory(source, weights)
    if weights:
        raise MetacompressError("--weights applies to a file.py:factory model, not to a zoo id (zoo weights are cached)")
    from metacompress.envs.zoo.cache import load_zoo_model

    model, data, _ = load_zoo_model(source)
    return model, data, {"zoo": source}


def _from_factory(source: str, weights: str | None) -> tuple[nn.Module, object, dict]:
    path_text, _, name = source.rpartition(":")
    path = Path(path_text)
    if not path.exists():
        raise MetacompressError(f"model file {path} does not exist; pass --model path/to/file.py:factory")
    spec = importlib.util.spec_from_file_location(f"metacompress_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise MetacompressError(f"{path} has no function {name!r}; define {name}() returning (model, data)")
    produced = factory()
    if not (isinstance(produced, tuple) and len(produced) == 2 and isinstance(produced[0], nn.Module)):
        raise MetacompressError(f"{source}() must return (model, data); got {type(produced).__name__}")
    model, data = produced
    if weights:
        from safetensors.torch import load_file

        try:
            model.load_state_dict(load_file(weights))
        except (RuntimeError, OSError, ValueError) as exc:
            raise MetacompressError(f"cannot load weights {weights} into {source}'s model: {str(exc).splitlines()[0]}") from exc
    return model.eval(), data, {"factory": source, "weights": weights}
