"""Records for the modules every command imports (the architecture table, the kernel ABI, the
policy model).

:class:`Record` gives a class what ``@dataclass(frozen=True)`` would: ``__init__`` taking its
annotated fields in order (keywords too, class attributes as defaults, :func:`factory` for a
fresh default per instance), ``__post_init__`` when defined, ``==``, ``hash``, ``repr``,
``__match_args__`` and no assignment; ``class C(Record, frozen=False)`` is mutable and unhashable
like a plain ``@dataclass``. :func:`replace` is ``dataclasses.replace``.

It exists for start-up time: importing :mod:`dataclasses` imports :mod:`inspect` (and ast, dis,
tokenize…), and each ``@dataclass`` compiles its methods when its module loads (more than half
a millisecond per class with ``slots=True``); together a fifth of ``sysgate compile``'s start-up
and a third of ``sysgate run``'s. Modules that are not on every command's path keep using
dataclasses.
"""
from __future__ import annotations


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make

    def __repr__(self) -> str:
        return f"factory({self.make!r})"


def factory(make) -> _Factory:
    """A field default made anew for each instance by calling ``make()`` (dataclasses' default_factory)."""
    return _Factory(make)


class Record:
    """Base of a record: subclasses list their fields as class annotations. ``_uncompared`` names
    fields that ``==`` and ``hash`` leave out (dataclasses' ``compare=False``)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _uncompared: tuple[str, ...] = ()
    _compared: tuple[str, ...] = ()

    def __init_subclass__(cls, frozen: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        own = tuple(cls.__dict__.get("__annotations__", {}))
        cls._fields = cls._fields + tuple(f for f in own if f not in cls._fields)
        cls._defaults = {**cls._defaults, **{f: cls.__dict__[f] for f in own if f in cls.__dict__}}
        cls._compared = tuple(f for f in cls._fields if f not in cls._uncompared)
        cls.__match_args__ = cls._fields
        if not frozen:
            cls.__setattr__ = object.__setattr__
            cls.__delattr__ = object.__delattr__
            cls.__hash__ = None

    def __init__(self, *args, **kwargs):
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} positional arguments but {len(args)} "
                            f"were given")
        values = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            values[name] = value
        for name in fields:
            if name in values:
                value = values[name]
            elif name in self._defaults:
                value = self._defaults[name]
                if value.__class__ is _Factory:
                    value = value.make()
            else:
                raise TypeError(f"{type(self).__name__}() missing required argument {name!r}")
            object.__setattr__(self, name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


def replace(record: Record, **changes) -> Record:
    """A new record like ``record`` with ``changes`` (``dataclasses.replace``: made through ``__init__``)."""
    unknown = set(changes) - set(record._fields)
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field(s) {', '.join(sorted(unknown))}")
    return type(record)(**{**{name: getattr(record, name) for name in record._fields}, **changes})
