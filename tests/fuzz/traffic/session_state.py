"""Put a session's object graph back into its pristine state, in place, cheaply.

The pipeline fuzz target runs every input on state equivalent to a fresh session. Deep-copying
every analyzer, the inventory and the DNS cache per input cost more than the input itself, so
instead the graph reachable from the session's roots is walked once: every camwatch object and
every container in it is recorded with its pristine contents (attribute values and elements by
identity). `restore()` then resets each recorded object's attributes and each container's
elements in place. Identities stay exactly as they were at the snapshot, so aliasing (one
Counters shared by engine, pipeline and flow table; a budget shared by an analyzer and its
conversation tables; bound methods cached on objects) survives, and whatever an input created
is dropped with the attributes and elements that pointed at it.

Objects named as shared (loaded rules, the state store) are kept by identity and not walked: the
caller vouches that a session never changes them, and `state_fingerprint()` lets a test check it.
Objects of other libraries (locks, sqlite connections, StringIO, lru caches) are kept by identity
and listed in `foreign`, so a reviewer sees what is not reset.
"""

from __future__ import annotations

import enum
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

OWNED_MODULE_PREFIXES = ("agent.", "analyzers.")
# Values that cannot change: kept by identity, never walked.
ATOM_TYPES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
    enum.Enum,
)
WEAK_CONTAINERS = (weakref.WeakSet, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)
_MISSING = object()
_SlotValues = tuple[tuple[str, Any], ...]


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


class SessionSnapshot:
    """The pristine state of everything reachable from `roots`, restorable in place."""

    def __init__(
        self,
        roots: Iterable[object],
        shared: Iterable[object] = (),
        shared_names: Iterable[str] = (),
        owned_modules: tuple[str, ...] = OWNED_MODULE_PREFIXES,
    ) -> None:
        self._owned_modules = owned_modules
        self.shared = list(shared)  # held so their ids stay valid
        self._shared_ids = {id(o) for o in self.shared}
        self._shared_names = frozenset(shared_names)
        self._seen: set[int] = set()
        self._keep: list[object] = []  # every recorded object, so ids stay valid
        self.foreign: dict[str, int] = {}  # type name -> count of other-library objects kept as they are
        # (object, its attribute dict or None, that dict's pristine items, pristine slot values)
        self._objects: list[tuple[Any, dict[str, Any] | None, dict[str, Any], _SlotValues]] = []
        self._dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self._lists: list[tuple[Any, list[Any]]] = []  # lists and bytearrays: slice assignment
        self._sets: list[tuple[set[Any], list[Any]]] = []
        self._deques: list[tuple[deque[Any], list[Any]]] = []
        self._weak: list[Any] = []
        pending = list(roots)
        while pending:
            self._visit(pending.pop(), pending)

    # -- walking ----------------------------------------------------------------------------------
    def _visit(self, value: object, pending: list[object]) -> None:
        if isinstance(value, ATOM_TYPES) or id(value) in self._shared_ids or id(value) in self._seen:
            return
        self._seen.add(id(value))
        self._keep.append(value)
        if isinstance(value, dict):
            self._dicts.append((value, dict(value)))
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, bytearray)):
            self._lists.append((value, list(value)))
            pending.extend(value)
        elif isinstance(value, set):
            self._sets.append((value, list(value)))
            pending.extend(value)
        elif isinstance(value, deque):
            self._deques.append((value, list(value)))
            pending.extend(value)
        elif isinstance(value, (tuple, frozenset)):
            pending.extend(value)  # immutable itself, but its elements may be camwatch objects
        elif isinstance(value, WEAK_CONTAINERS):
            if len(value):
                raise ValueError(f"a non-empty {type(value).__name__} cannot be snapshotted")
            self._weak.append(value)
        elif isinstance(value, types.MethodType):
            pending.append(value.__self__)
        elif type(value).__module__.startswith(self._owned_modules):
            attrs = getattr(value, "__dict__", None)
            pristine = dict(attrs) if attrs is not None else {}
            slots = tuple((name, getattr(value, name, _MISSING)) for name in _slot_names(type(value)))
            self._objects.append((value, attrs, pristine, slots))
            for name, attr in [*pristine.items(), *slots]:
                if name in self._shared_names and attr is not None:
                    self._shared_ids.add(id(attr))
                    self.shared.append(attr)
                elif attr is not _MISSING:
                    pending.append(attr)
        else:
            name = f"{type(value).__module__}.{type(value).__qualname__}"
            self.foreign[name] = self.foreign.get(name, 0) + 1

    # -- restoring --------------------------------------------------------------------------------
    def restore(self) -> None:
        """Every recorded object and container back to its pristine contents, in place."""
        for obj, attrs, pristine, slots in self._objects:
            if attrs is not None:
                attrs.clear()
                attrs.update(pristine)
            for name, value in slots:
                if value is _MISSING:
                    if hasattr(obj, name):
                        delattr(obj, name)
                else:
                    object.__setattr__(obj, name, value)
        for mapping, items in self._dicts:
            # clear() first even when equal: a dict's iteration order is part of its state
            mapping.clear()
            if items:
                mapping.update(items)
        for sequence, elements in self._lists:
            sequence[:] = elements
        for members, elements in self._sets:
            members.clear()
            if elements:
                members.update(elements)
        for queue, elements in self._deques:
            queue.clear()
            if elements:
                queue.extend(elements)
        for weak in self._weak:
            weak.clear()

    def summary(self) -> str:
        return (
            f"{len(self._objects)} objects, {len(self._dicts)} dicts, {len(self._lists)} lists, "
            f"{len(self._sets)} sets, {len(self._deques)} deques, {len(self._weak)} weak containers; "
            f"{len(self.shared)} shared; foreign: {dict(sorted(self.foreign.items()))}"
        )


def state_fingerprint(
    roots: Iterable[object],
    skip: Callable[[object], bool] = lambda _: False,
    owned_modules: tuple[str, ...] = OWNED_MODULE_PREFIXES,
) -> Any:
    """A structural rendering of everything reachable from `roots` (shared objects included),
    with object identities replaced by first-visit numbers, so two states compare equal exactly
    when they hold the same values with the same aliasing. Containers and camwatch objects are
    walked; other libraries' objects are rendered by repr (their private lazy caches would
    otherwise differ); sets are rendered sorted; objects `skip` accepts (pure caches, say) by
    type only."""
    numbers: dict[int, int] = {}
    keep: list[object] = []

    def render(value: object) -> Any:
        if isinstance(value, (type(None), bool, int, float, complex, str, bytes, range, enum.Enum)):
            return value
        if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            return ("ref", getattr(value, "__qualname__", repr(value)))
        if id(value) in numbers:
            return ("seen", numbers[id(value)])
        numbers[id(value)] = len(numbers)
        keep.append(value)
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        if skip(value):
            return (kind,)
        if isinstance(value, dict):
            return (kind, [(render(k), render(v)) for k, v in value.items()])
        if isinstance(value, (list, tuple, deque, bytearray)):
            return (kind, [render(v) for v in value])
        if isinstance(value, (set, frozenset, *WEAK_CONTAINERS)):
            return (kind, sorted((render(v) for v in list(value)), key=repr))
        if isinstance(value, types.MethodType):
            return (kind, value.__func__.__qualname__, render(value.__self__))
        if not type(value).__module__.startswith(owned_modules):
            return (kind, repr(value))
        attrs = dict(getattr(value, "__dict__", {}))
        for name in _slot_names(type(value)):
            attrs[name] = getattr(value, name, "<unset>")
        return (kind, [(name, render(attr)) for name, attr in sorted(attrs.items())])

    return [render(root) for root in roots]
