"""Pruning a trained objective (its net and what the objective puts on it, such as a classifier's head).

- Unstructured: global magnitude pruning of the Linear and Conv weights (`torch.nn.utils.prune`). The masks
  stay on while a fine-tune runs, so pruned weights stay zero, and are then made permanent: the model keeps
  its shapes (size and latency only change once the zeros are compressed or skipped by a sparse kernel).
- Structured: whole channels of a CNN, or attention heads and MLP hidden units of every Transformer block,
  are removed, so the layers really shrink. The new widths are written into the run config
  (`model.net.channels`; `model.net.heads` with `head_dim`, the unchanged width of a head; `mlp_ratio`),
  from which `load_run` rebuilds the smaller net and loads the sliced weights.
"""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from dlforge.compress.export import ExportError, _net_name
from dlforge.nets.layers.attention import SelfAttention
from dlforge.nets.layers.feedforward import MLP
from dlforge.nets.vision.cnn import CNN

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prune_unstructured(model: nn.Module, amount: float) -> None:
    """Mask the `amount` fraction of smallest-magnitude weights over all prunable layers together.
    A weight shared with another layer (GPT's output layer, tied to its token embedding) is left alone:
    masking it in one place would untie it."""
    owners = Counter(id(parameter) for module in model.modules() for parameter in module.parameters(recurse=False))
    targets = [
        (module, "weight")
        for module in model.modules()
        if isinstance(module, PRUNABLE) and owners[id(module.weight)] == 1
    ]
    if not targets:
        raise ExportError(f"prune_unstructured: {_net_name(model)} has no unshared Linear or Conv weight to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    """Fold the pruning masks into the weights (plain parameters again, with zeros where masked)."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def prune_structured(
    model: nn.Module, net_config: dict[str, Any], amount: float
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model's weights with `amount` of each layer's channels (CNN), or of each Transformer block's
    attention heads and MLP hidden units, removed, those of smallest importance, and the changes to the
    net's config (`net_config`, the run config's `model.net`) that build the smaller net."""
    net = getattr(model, "net", None)
    if isinstance(net, CNN):
        return _cnn_channels(model, net_config["convs_per_stage"], amount)
    # a net can only be rebuilt smaller by the parameters that size those layers
    parameters = inspect.signature(type(net)).parameters if net is not None else {}
    modules = list(net.modules()) if net is not None else []
    mlps = [module for module in modules if isinstance(module, MLP)] if "mlp_ratio" in parameters else []
    attentions = [module for module in modules if isinstance(module, SelfAttention)] if "head_dim" in parameters else []
    if not (mlps or attentions):
        raise ExportError(
            f"prune_structured does not apply to {_net_name(model)}: it removes the channels of a CNN, and the "
            "heads of shared self-attention layers (nets configured by `head_dim`) and hidden units of GELU MLPs "
            "(nets configured by `mlp_ratio`) of Transformers"
        )
    names = {module: name for name, module in model.named_modules()}
    state, changes = dict(model.state_dict()), {}
    if mlps:
        changes.update(_mlp_units(names, state, mlps, amount))
    if attentions:
        changes.update(_heads(names, state, attentions, amount))
    return state, changes


def _kept(count: int, amount: float) -> int:
    return max(1, round(count * (1 - amount)))


def _cnn_channels(model: nn.Module, convs_per_stage: int, amount: float):
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ExportError(f"prune_structured: {type(model).__name__} puts no linear head on the CNN's channels")
    names = {module: name for name, module in model.named_modules()}
    state = dict(model.state_dict())
    layers = list(model.net.features)
    convs = [(conv, norm) for conv, norm in zip(layers, layers[1:]) if isinstance(conv, nn.Conv2d)]
    if not all(isinstance(norm, nn.BatchNorm2d) for _, norm in convs):
        raise ExportError("prune_structured: a CNN conv layer without a BatchNorm after it")
    # Channels are pruned per conv, the same count in every conv of a stage (the config has one width a stage).
    kept_inputs, stages = None, []
    for index, (conv, norm) in enumerate(convs):
        # BatchNorm rescales each channel: the filter folded with its scale is what the next layer sees
        scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).abs()
        importance = conv.weight.detach().abs().sum(dim=(1, 2, 3)) * scale.detach()
        keep = importance.topk(_kept(conv.out_channels, amount)).indices.sort().values
        weight = state[f"{names[conv]}.weight"][keep]
        state[f"{names[conv]}.weight"] = weight if kept_inputs is None else weight[:, kept_inputs]
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{names[norm]}.{key}"] = state[f"{names[norm]}.{key}"][keep]
        kept_inputs = keep
        if (index + 1) % convs_per_stage == 0:
            stages.append(len(keep))
    state[f"{names[head]}.weight"] = state[f"{names[head]}.weight"][:, kept_inputs]
    return state, {"channels": stages}


def _mlp_units(names: dict, state: dict, mlps: list[MLP], amount: float) -> dict[str, Any]:
    """Slice the MLPs' weights in `state` to their most important hidden units; the config change."""
    dim, hidden = mlps[0].fc.in_features, mlps[0].fc.out_features
    kept = _kept(hidden, amount)
    for mlp in mlps:
        # a hidden unit's reach: how strongly it reads the input times how strongly it writes the output
        importance = mlp.fc.weight.detach().norm(dim=1) * mlp.proj.weight.detach().norm(dim=0)
        keep = importance.topk(kept).indices.sort().values
        fc, proj = names[mlp.fc], names[mlp.proj]
        state[f"{fc}.weight"] = state[f"{fc}.weight"][keep]
        if mlp.fc.bias is not None:
            state[f"{fc}.bias"] = state[f"{fc}.bias"][keep]
        state[f"{proj}.weight"] = state[f"{proj}.weight"][:, keep]
    ratio = kept / dim
    if int(dim * ratio) != kept:  # the nets size the MLP as int(dim * mlp_ratio): a ratio that floors to `kept`
        ratio = (kept + 0.5) / dim
    return {"mlp_ratio": ratio}


def _heads(names: dict, state: dict, attentions: list[SelfAttention], amount: float) -> dict[str, Any]:
    """Slice the attention layers' weights in `state` to their most important heads, as many in every layer
    (the config has one `heads`); the config change, which keeps each head's width."""
    heads, head_dim = attentions[0].heads, attentions[0].head_dim
    kept = _kept(heads, amount)
    width = heads * head_dim  # of each of the query, key and value projections
    for attention in attentions:
        # a head's reach: how strongly its values read the input times how strongly it writes the output
        values = attention.qkv.weight.detach()[2 * width :].unflatten(0, (heads, -1)).flatten(1).norm(dim=1)
        outputs = attention.proj.weight.detach().unflatten(1, (heads, -1)).transpose(0, 1).flatten(1).norm(dim=1)
        keep = (values * outputs).topk(kept).indices.sort().values
        columns = (keep[:, None] * head_dim + torch.arange(head_dim)).flatten()  # the kept heads' channels
        rows = torch.cat([columns + part * width for part in range(3)])  # ... in the queries, keys and values
        qkv, proj = names[attention.qkv], names[attention.proj]
        state[f"{qkv}.weight"] = state[f"{qkv}.weight"][rows]
        if attention.qkv.bias is not None:
            state[f"{qkv}.bias"] = state[f"{qkv}.bias"][rows]
        state[f"{proj}.weight"] = state[f"{proj}.weight"][:, columns]
    return {"heads": kept, "head_dim": head_dim}
