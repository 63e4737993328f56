"""Checkpoints of a growing run: what it takes to continue a run bit for bit.

A grown network is no longer the one its configuration builds (a widened VGG, a ResNet with
inserted blocks, a seed-batched net with a new layer), so a checkpoint describes the network
as it is now. :func:`architecture` writes the module tree as JSON: for every module its class
(by import path), its plain attributes (numbers, strings, tuples, dtypes, importable
functions), its parameters and buffers (shape, dtype; not the values) and its children, in
registration order. :func:`rebuild` makes the same tree with empty tensors, without calling
any constructor, so it serves every model the chapters grow (VGG, ResNet, WRN, MobileNet,
MLP, the seed-batched and the stacked nets, an ``nn.Sequential``); :func:`tensors` and
:func:`load_tensors` carry the values (every parameter and buffer, non-persistent ones too).
The parameter order is the original's, so an optimiser's ``state_dict`` loads onto it.

The parts of a growth plan (when, where, how), the observers and the learning-rate schedule
keep state of their own (counters, triggers, random generators, NAGN's window of batches,
moving averages). :func:`capture_state` pickles their attributes; :func:`restore_state` puts
them back *into* the live objects of a new run, so that every reference between them (a
where-criterion and the observer the loop attached) stays as it is. References to the
network (a policy that remembers the model it saw) come back as references to the rebuilt
network; hook handles and local functions (a distributed operator's closure) stay those of
the new run (its observers are attached before the state is restored); weak references and
argument-free lambdas (caches) come back as dead references, i.e. empty caches.

:func:`save` writes a checkpoint atomically (a temporary file, flushed to disk, renamed over
the old one): a crash while writing leaves the previous checkpoint.
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import random
import types
import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from growcore.paths import write_atomically

FORMAT = 1  # version of the checkpoint layout
_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # nn.Module's own attributes (hooks, ...)
# mappings whose values are functions that cannot be imported by name (lambdas): a function
# found in one is written as (mapping, key)
FUNCTION_TABLES = ("growcore.activations:ACTIVATIONS",)


class ArchitectureError(ValueError):
    """A module attribute that :func:`architecture` cannot describe."""


# ---------------------------------------------------------------- the architecture
def architecture(model: nn.Module) -> dict:
    """The module tree of ``model`` (a ``DistributedDataParallel`` wrapper: its network) as
    JSON-able data that :func:`rebuild` turns back into the same tree.

    Raises
    ------
    ArchitectureError
        An attribute of a type it cannot write (naming the module and the attribute).
    """
    return _module_spec(getattr(model, "module", model), "", {})


def rebuild(spec: dict, device: str | torch.device = "cpu") -> nn.Module:
    """The network of :func:`architecture`'s ``spec`` with uninitialised tensors on
    ``device`` (load the values with :func:`load_tensors`)."""
    return _build(spec, "", {}, torch.device(device))


def _module_spec(module: nn.Module, path: str, seen: dict[int, str]) -> dict:
    if id(module) in seen:  # one module at two places: shared, as in the original
        return {"same_as": seen[id(module)]}
    seen[id(module)] = path
    where = path or "the model"
    attributes = {key: _encode(value, f"{where}.{key}", seen)
                  for key, value in vars(module).items() if key not in _MODULE_INTERNALS}
    return {"class": _import_name(type(module), where),
            "training": module.training,
            "attributes": attributes,
            "parameters": {name: None if p is None else _tensor_spec(p)
                           for name, p in module._parameters.items()},
            "buffers": {name: None if b is None else {
                **_tensor_spec(b), "persistent": name not in module._non_persistent_buffers_set}
                for name, b in module._buffers.items()},
            "modules": {name: None if m is None else _module_spec(m, _join(path, name), seen)
                        for name, m in module._modules.items()}}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tensor_spec(tensor: torch.Tensor) -> dict:
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
            "requires_grad": tensor.requires_grad, "meta": tensor.is_meta}


def _import_name(obj, where: str) -> str:
    name = f"{obj.__module__}:{obj.__qualname__}"
    if _resolve(name, quiet=True) is not obj:
        raise ArchitectureError(f"{where}: {obj!r} cannot be imported as {name}")
    return name


def _resolve(name: str, quiet: bool = False):
    module, _, qualname = name.partition(":")
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        if quiet:
            return None
        raise
    return found


def _function_tables() -> dict[str, dict]:
    return {name: _resolve(name) for name in FUNCTION_TABLES}


def _encode(value, where: str, seen: dict[int, str]):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]", seen) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{where}[{i}]", seen) for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, f"{where}.{k}", seen) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, nn.Module):  # an unregistered module (e.g. a skeleton)
        return {"module": _module_spec(value, "@" + where, seen), "path": "@" + where}
    if isinstance(value, functools.partial):
        return {"partial": _encode(value.func, where, seen),
                "args": _encode(list(value.args), where, seen),
                "keywords": _encode(dict(value.keywords), where, seen)}
    if callable(value):
        for table, functions in _function_tables().items():
            key = next((k for k, f in functions.items() if f is value), None)
            if key is not None:
                return {"table": table, "key": key}
        return {"ref": _import_name(value, where)}
    raise ArchitectureError(f"{where}: cannot describe a {type(value).__name__} "
                            f"({value!r:.60}) in an architecture")


def _decode(value, made: dict, device: torch.device):
    if isinstance(value, list):
        return [_decode(v, made, device) for v in value]
    if not isinstance(value, dict):
        return value
    if "tuple" in value:
        return tuple(_decode(v, made, device) for v in value["tuple"])
    if "dict" in value:
        return {k: _decode(v, made, device) for k, v in value["dict"].items()}
    if "dtype" in value:
        return getattr(torch, value["dtype"])
    if "device" in value:
        return torch.device(value["device"])
    if "module" in value:
        return _build(value["module"], value["path"], made, device)
    if "partial" in value:
        return functools.partial(_decode(value["partial"], made, device),
                                 *_decode(value["args"], made, device),
                                 **_decode(value["keywords"], made, device))
    if "table" in value:
        return _resolve(value["table"])[value["key"]]
    return _resolve(value["ref"])


def _empty(spec: dict, device: torch.device) -> torch.Tensor:
    return torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]),
                       device="meta" if spec["meta"] else device)


def _build(spec: dict, path: str, made: dict, device: torch.device) -> nn.Module:
    if "same_as" in spec:
        return made[spec["same_as"]]
    cls = _resolve(spec["class"])
    module = cls.__new__(cls)
    nn.Module.__init__(module)  # hooks and registries, not the class's own constructor
    made[path] = module
    module.training = spec["training"]
    for key, value in spec["attributes"].items():
        module.__dict__[key] = _decode(value, made, device)
    for name, tensor in spec["parameters"].items():
        module._parameters[name] = None if tensor is None else nn.Parameter(
            _empty(tensor, device), requires_grad=tensor["requires_grad"])
    for name, tensor in spec["buffers"].items():
        module._buffers[name] = None if tensor is None else _empty(tensor, device)
        if tensor is not None and not tensor["persistent"]:
            module._non_persistent_buffers_set.add(name)
    for name, child in spec["modules"].items():
        module._modules[name] = (None if child is None else
                                 _build(child, _join(path, name), made, device))
    return module


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the network (non-persistent buffers too), by name."""
    net = getattr(model, "module", model)
    return {name: t.detach() for name, t in [*net.named_parameters(), *net.named_buffers()]}


@torch.no_grad()
def load_tensors(model: nn.Module, values: dict[str, torch.Tensor]) -> nn.Module:
    """Copy ``values`` (of :func:`tensors`) into ``model``; the names must match exactly."""
    net = getattr(model, "module", model)
    own = dict([*net.named_parameters(), *net.named_buffers()])
    if set(own) != set(values):
        raise ValueError(f"the tensors do not fit the network: missing "
                         f"{sorted(set(own) - set(values))[:5]}, unexpected "
                         f"{sorted(set(values) - set(own))[:5]}")
    for name, tensor in own.items():
        tensor.copy_(values[name])
    return model


# ---------------------------------------------------------------- the state of the parts
_DEAD = ("dead reference",)
_HANDLE = ("hook handle",)
_LIVE = ("the live value",)


class _Keep:
    """Marks an attribute whose live value the restore keeps: a local function (code, such
    as a distributed operator's closure, is not state)."""

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a local function was not saved in the checkpoint")


KEEP = _Keep()


def _dead_reference():
    """What a weak reference or a cache's argument-free lambda becomes: a dead reference."""
    return None


class _Pickler(pickle.Pickler):
    """Pickles the parts' attributes; the network's modules by path, handles and caches'
    references as markers."""

    def __init__(self, file, modules: dict[int, str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules = modules

    def persistent_id(self, obj):
        if isinstance(obj, nn.Module) and id(obj) in self.modules:
            return ("module", self.modules[id(obj)])
        if isinstance(obj, RemovableHandle):
            return _HANDLE
        if isinstance(obj, weakref.ReferenceType):
            return _DEAD
        if isinstance(obj, types.FunctionType) and "<locals>" in obj.__qualname__:
            if obj.__name__ == "<lambda>" and obj.__code__.co_argcount == 0:
                return _DEAD
            return _LIVE
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, model: nn.Module | None):
        super().__init__(file)
        self.model = model

    def persistent_load(self, pid):
        if pid == _DEAD:
            return _dead_reference
        if pid == _HANDLE:
            return None
        if pid == _LIVE:
            return KEEP
        kind, path = pid
        if kind != "module" or self.model is None:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if path == "<wrapper>":
            return self.model
        net = getattr(self.model, "module", self.model)
        return net.get_submodule(path)


def _module_paths(model: nn.Module | None) -> dict[int, str]:
    if model is None:
        return {}
    net = getattr(model, "module", model)
    paths = {id(m): name for name, m in net.named_modules()}
    if net is not model:
        paths[id(model)] = "<wrapper>"
    return paths


def _stateful(obj) -> bool:
    return (hasattr(obj, "__dict__") and not isinstance(
        obj, (nn.Module, torch.Tensor, torch.Generator, type, types.FunctionType,
              types.MethodType, functools.partial)))


def capture_state(objects: Iterable, model: nn.Module | None = None) -> bytes:
    """The attributes of every object of ``objects`` that has any (not modules, tensors or
    functions), pickled; references to ``model``'s modules are kept as references."""
    buffer = io.BytesIO()
    _Pickler(buffer, _module_paths(model)).dump(
        [vars(obj) if _stateful(obj) else None for obj in objects])
    return buffer.getvalue()


def restore_state(objects: Iterable, blob: bytes, model: nn.Module | None = None) -> None:
    """Put the state of :func:`capture_state` back into the live ``objects`` (the same
    objects in the same order, e.g. the parts of a freshly built plan): attribute by
    attribute, into nested objects of the same class in place, so that references between
    the live objects stay; hook handles of the live objects are kept."""
    objects = list(objects)
    saved = _Unpickler(io.BytesIO(blob), model).load()
    if len(saved) != len(objects):
        raise ValueError(f"the checkpoint holds the state of {len(saved)} objects, the run "
                         f"has {len(objects)}")
    seen: set[int] = set()
    for live, state in zip(objects, saved):
        if state is not None:
            _restore_into(live, state, seen)


def _holds_handle(value) -> bool:
    if isinstance(value, RemovableHandle):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, RemovableHandle)
                                                   for v in value)


def _restore_into(live, state: dict, seen: set[int]) -> None:
    if id(live) in seen:
        return
    seen.add(id(live))
    own = vars(live)
    for key, value in state.items():
        current = own.get(key)
        if value is KEEP or _holds_handle(current):
            continue
        if _stateful(current) and type(current) is type(value) and current is not live:
            _restore_into(current, vars(value), seen)
        else:
            own[key] = value


# ---------------------------------------------------------------- random number generators
def rng_state() -> dict:
    """The global generators' states: torch (CPU and every initialised GPU), NumPy, Python."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore the states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


# ---------------------------------------------------------------- files
def save(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (``torch.save``) to ``path`` atomically: into a temporary file in
    the same folder, flushed to disk, then renamed over ``path``. A failure leaves ``path``
    as it was and no temporary file."""
    path = Path(path)
    return write_atomically(path, lambda f: torch.save({"format": FORMAT, **payload}, f),
                            prefix=f".{path.name}.", suffix=".tmp")


def load(path: str | Path, map_location=None) -> dict:
    """A checkpoint written by :func:`save` (tensors where they were, unless
    ``map_location``)."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload.get('format')!r}, this version "
                         f"reads {FORMAT}")
    return payload
