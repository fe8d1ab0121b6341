"""Config groups bound to their builders' signatures before anything is built: a value whose builder argument is
annotated with a plain type (int, float, bool, str, or an optional one) must have that type, so `data.batch_size=abc`
is one line naming the key and the type instead of a traceback from deep inside a build. Range and meaning checks
stay with each group's own validation (config.py, compress/, measure/protocol.py)."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Groups built by instantiating `_target_` with the group's keys (the llm group's `prompt_template` is read by the
# model builder instead).
BOUND_GROUPS = ("encoder", "connector", "llm", "data")
NOT_ARGUMENTS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_", "prompt_template"})
_PLAIN = (bool, int, float, str)


def bind(cfg: DictConfig, out: list[str]) -> None:
    """Append one message per value whose type its builder's signature rules out."""
    for group in BOUND_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            _bind_group(group, node, out)


def _bind_group(group: str, node: DictConfig, out: list[str]) -> None:
    from hydra.utils import get_object

    try:
        builder = get_object(str(node._target_))
    except Exception as err:  # noqa: BLE001 - an unimportable target is reported, whatever went wrong
        out.append(f"{group}._target_={node._target_} cannot be imported ({type(err).__name__}: {err})")
        return
    params = _annotations(builder)
    values = OmegaConf.to_container(node, resolve=True)
    for key, value in values.items():
        allowed = params.get(str(key))
        if key in NOT_ARGUMENTS or allowed is None or _fits(value, allowed):
            continue
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        out.append(f"{group}.{key} must be {names}; got {value!r}")


def _annotations(builder: Any) -> dict[str, tuple[type, ...]]:
    """Argument -> the plain types it accepts, for the arguments annotated with plain types only."""
    fn = builder.__init__ if isinstance(builder, type) else builder
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    namespace = dict(vars(module)) if module else {}
    out = {}
    for name, param in inspect.signature(builder).parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the builder's own annotation, in its module
            except Exception:  # noqa: BLE001 - names only imported for type checkers: not a plain type anyway
                continue
        plain = _plain(annotation)
        if plain:
            out[name] = plain
    return out


def _plain(annotation: Any) -> tuple[type, ...] | None:
    if annotation in _PLAIN:
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = typing.get_args(annotation)
        if all(p in _PLAIN or p is type(None) for p in parts):
            return tuple(parts)
    return None


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed  # True is an int to Python, never to a config
    if isinstance(value, int):
        return int in allowed or float in allowed
    return any(isinstance(value, t) for t in allowed if t is not type(None))
