"""A reference model whose parameters stay on the meta device until a graph needs them.

`build_lazy(model_class, config, source)` makes the model with meta parameters (its buffers, computed at
construction, are real) and a `LazyWeights` that reads each parameter from the checkpoint (`weight_source`) as fp32,
which is what loading it eagerly would give. Export and `compare` then hold at most one graph's parameters
(`materialized`), or one layer's (`on_call`, for the decoder, whose fp32 weights are 27 GB in 7B), or none at all
(`standins`: zero-stride tensors of the right shapes, for tracing a graph whose weights are bound afterwards).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .weight_source import WeightSource


class LazyWeights:
    def __init__(self, model: nn.Module, source: WeightSource):
        self.source = source
        self.names: dict[int, list[str]] = {}  # id(parameter) -> its names (tied parameters have several)
        self.owners: dict[int, list[tuple[nn.Module, str]]] = {}  # id(parameter) -> (module, attribute) holding it
        self.params = {id(p): p for p in model.parameters()}  # the model's own (meta) parameters
        self._running: dict[int, dict] = {}  # id(module) -> its own parameters, while `on_call` made them real
        for name, param in model.named_parameters(remove_duplicate=False):
            self.names.setdefault(id(param), []).append(name)
        for module in model.modules():
            for attribute, param in module._parameters.items():
                if param is not None:
                    self.owners.setdefault(id(param), []).append((module, attribute))

    def name(self, param: nn.Parameter) -> str:
        """The checkpoint's name for a parameter of the model (of a tied pair: the one the checkpoint holds)."""
        names = self.names[id(param)]
        return next((n for n in names if n in self.source.shapes), names[0])

    def value(self, param: nn.Parameter) -> torch.Tensor:
        """The parameter's values in fp32, read from the checkpoint (a real parameter's own values)."""
        if not param.is_meta:
            return param.detach()
        return self.source.read(self.name(param)).float()

    @contextlib.contextmanager
    def materialized(self, module: nn.Module) -> Iterator[None]:
        """Every parameter of `module` real while inside (then back on the meta device)."""
        with self._swapped({id(p): p for p in module.parameters()}, self.value):
            yield

    @contextlib.contextmanager
    def standins(self, module: nn.Module) -> Iterator[None]:
        """Every parameter of `module` a view of one shared buffer while inside: a tracer sees the shapes and ops
        while memory holds the largest parameter's worth (see `bound_weights`). Views, not zero-stride tensors:
        matrix products of those fall off BLAS onto a slow loop."""
        params = {id(p): p for p in module.parameters()}
        shared = torch.zeros(max((p.numel() for p in params.values()), default=0))
        with self._swapped(params, lambda p: shared[:p.numel()].view(p.shape)):
            yield

    @contextlib.contextmanager
    def on_call(self, module: nn.Module) -> Iterator[None]:
        """Each submodule's own parameters made real only while that submodule runs: for modules that use their
        parameters in their own `forward` only (Llama layers: projections, norms), so memory holds one at a time."""
        hooks = []
        for sub in module.modules():
            own = {id(p): p for p in sub._parameters.values() if p is not None}
            if own:
                hooks.append(sub.register_forward_pre_hook(lambda m, args, own=own: self._enter(m, own)))
                hooks.append(sub.register_forward_hook(lambda m, args, out: self._exit(m)))
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def _enter(self, module: nn.Module, params: dict) -> None:
        self._put({key: nn.Parameter(self.value(param), requires_grad=False) for key, param in params.items()})
        self._running[id(module)] = params

    def _exit(self, module: nn.Module) -> None:
        self._put(self._running.pop(id(module)))

    def load_all(self) -> None:
        """Every parameter real for good: a reference model to run whole (transformers' generate, benchmarks)."""
        self._put({key: nn.Parameter(self.value(param), requires_grad=False) for key, param in self.params.items()})

    @contextlib.contextmanager
    def _swapped(self, params: dict[int, nn.Parameter], make) -> Iterator[None]:
        """Each parameter in `params` replaced, wherever the model holds it, by `make(parameter)`; restored after."""
        self._put({key: nn.Parameter(make(param), requires_grad=False) for key, param in params.items()})
        try:
            yield
        finally:
            self._put(params)

    def _put(self, values: dict[int, nn.Parameter]) -> None:
        """Sets each parameter (by the id of the model's own) to a value wherever the model holds it."""
        for key, value in values.items():
            for owner, attribute in self.owners.get(key, []):
                owner._parameters[attribute] = value


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Modules constructed inside put their parameters on the meta device (no memory, no initialisation cost);
    buffers stay real (rotary frequencies and the like are computed at construction and never saved)."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and not param.is_meta:  # a meta one is a tie to a parameter made here
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original
