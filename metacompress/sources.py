"""Where ``apply`` gets user code from: the model (a zoo id, or a Python file's factory + optional weights) and a metric function."""

from __future__ import annotations

import importlib.util
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import nn

from metacompress.errors import MetacompressError, UserCodeError


@contextmanager
def _user_code(what: str, path: Path) -> Iterator[None]:
    """Turn an exception raised by the user's code into one error naming it and the line in their file."""
    try:
        yield
    except MetacompressError:
        raise
    except Exception as exc:  # anything the user's code raises: theirs to fix, reported as such
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        where = f" at {path}:{frames[-1].lineno}" if frames else ""
        raise UserCodeError(f"{what} failed{where}: {type(exc).__name__}: {exc}; fix it (run it alone to see the traceback)") from exc


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


def _import_file(path: Path, fix: str):
    """Import the user's Python file as a module (its errors reported with their line in it)."""
    spec = importlib.util.spec_from_file_location(f"metacompress_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise MetacompressError(f"{path} is not a Python file; pass {fix}")
    module = importlib.util.module_from_spec(spec)
    with _user_code(f"importing {path}", path):
        spec.loader.exec_module(module)
    return module


def load_function(source: str, flag: str = "--metric"):
    """The function a ``module:fn`` or ``path/to/file.py:fn`` names (``apply --metric``).

    Raises:
        MetacompressError: not of that form, the module or file is missing, or it has no such callable.
    """
    module_text, sep, name = source.rpartition(":")
    if not sep or not module_text or not name.isidentifier():
        raise MetacompressError(f"cannot read {flag} {source!r}; write module:function or path/to/file.py:function")
    if module_text.endswith(".py"):
        path = Path(module_text)
        if not path.exists():
            raise MetacompressError(f"{flag} file {path} does not exist; write path/to/file.py:function")
        module = _import_file(path, f"{flag} path/to/file.py:function")
    else:
        import importlib

        try:
            module = importlib.import_module(module_text)
        except ImportError as exc:
            raise MetacompressError(f"{flag} {source!r}: cannot import {module_text!r} ({exc}); is it installed or on PYTHONPATH?") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise MetacompressError(f"{flag} {source!r}: {module_text} has no function {name!r}")
    return function


def _from_factory(source: str, weights: str | None) -> tuple[nn.Module, object, dict]:
    path_text, _, name = source.rpartition(":")
    path = Path(path_text)
    if not path.exists():
        raise MetacompressError(f"model file {path} does not exist; pass --model path/to/file.py:factory")
    module = _import_file(path, "--model path/to/file.py:factory")
    factory = getattr(module, name, None)
    if not callable(factory):
        raise MetacompressError(f"{path} has no function {name!r}; define {name}() returning (model, data)")
    with _user_code(f"model factory {source}()", path):
        produced = factory()
    if not (isinstance(produced, tuple) and len(produced) == 2 and isinstance(produced[0], nn.Module)):
        raise MetacompressError(f"{source}() must return (model, data); got {type(produced).__name__}")
    model, data = produced
    if weights:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from metacompress.compressors.export import load_tensors

        try:
            load_tensors(model, load_file(weights))
        except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
            raise MetacompressError(f"cannot load weights {weights} into {source}'s model: {str(exc).splitlines()[0]}") from exc
    return model.eval(), data, {"factory": source, "weights": weights}


def load_run(run_dir: str | Path) -> tuple[nn.Module, object]:
    """The compressed model a ``metacompress apply`` run saved, rebuilt, with its data splits.

    Args:
        run_dir: a run folder (``runs/apply-<model>-s<seed>/``) holding ``model/``.

    Raises:
        MetacompressError: if the folder holds no saved model or does not say how to rebuild it.
    """
    from metacompress.compressors.export import load_compressed, read_structure

    model_dir = Path(run_dir) / "model"
    if not model_dir.is_dir():
        raise MetacompressError(f"{run_dir} has no model/ folder; pass a run folder written by `metacompress apply`")
    builder = read_structure(model_dir)["builder"]
    if "zoo" in builder:
        base, data, _ = load_model_source(builder["zoo"])
    elif "factory" in builder:
        base, data, _ = load_model_source(builder["factory"], builder.get("weights"))
    else:
        raise MetacompressError(f"{model_dir}/model.json records no builder ({builder}); re-run `metacompress apply`")
    return load_compressed(model_dir, base), data
