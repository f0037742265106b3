"""What identifies code from one session to the next, for the model cache.

A trained model is cached under a key that includes the trainer's own code
(:func:`code_text` of its modules) and the contrastive loss it was trained with. For a
function written by a reader that key must change whenever what the function computes may
change (its code, its default arguments, the values it closes over, the constants and
helper functions it reads from its notebook or module, the registered losses it calls by
name, the attributes of a callable object)
and must stay the same for the same code in a new session or another process: no memory
addresses, no set or dict order that depends on the hash seed, no printout that shortens a
large tensor.

Chapter: 05_training
"""

from __future__ import annotations

import ast
import contextvars
import dis
import enum
import functools
import hashlib
import inspect
import io
import logging
import os
import re
import site
import sys
import sysconfig
import tokenize
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import numpy as np
import torch

from .losses import CONTRASTIVE_LOSSES, get_contrastive

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
log = logging.getLogger(__name__)


def _bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def value_text(value: Any, seen: frozenset[int] = frozenset()) -> str:
    """A value as text that is the same in every session: sets and dicts sorted, arrays and
    tensors by dtype, shape and a hash of their bytes, callables by :func:`loss_source`.

    Chapter: 05_training
    """
    if id(value) in seen:
        return "<recursion>"
    inner = seen | {id(value)}
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(value_text(v, inner) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted(f"{value_text(k, inner)}:{value_text(v, inner)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}(" + ",".join(value_text(v, inner) for v in value) + ")"
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return f"tensor({t.dtype},{tuple(t.shape)},{_bytes_digest(raw)})"
    if isinstance(value, np.ndarray) and value.dtype.hasobject:  # its bytes are pointers
        return f"array({value.dtype},{value.shape},{value_text(value.tolist(), inner)})"
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return f"array({a.dtype},{a.shape},{_bytes_digest(a.tobytes())})"
    if inspect.iscode(value):
        return _code_text(value, inner)
    if isinstance(value, ModuleType):  # a reader's helpers file or package, imported whole
        return f"module({value.__name__}:{_module_code_digest(value)})"
    if inspect.isfunction(value):
        return _once_per_key(
            id(value), f"function {value.__qualname__}", lambda: loss_source(value, inner)
        )
    if inspect.isclass(value) and _is_readers(value):
        return _once_per_key(
            ("class", id(value)), f"class {value.__qualname__}", lambda: loss_source(value, inner)
        )
    if not (inspect.isclass(value) or inspect.isroutine(value)) and _is_readers(value):
        return _once_per_key(  # an object of the reader's class
            ("object", id(value)),
            f"object {type(value).__qualname__}",
            lambda: _readers_object_text(value, inner),
        )
    if callable(value):
        return loss_source(value, inner)
    return _ADDRESS.sub("", repr(value))


def _readers_object_text(obj: object, seen: frozenset[int]) -> str:
    """An object of the reader's class: a callable one (a loss object) by
    :func:`loss_source`; another by its class's code and the constants it holds
    (:func:`_constant_attributes_text`)."""
    if callable(obj):
        return loss_source(obj, seen)
    cls = type(obj)
    code = _once_per_key(
        ("class code", id(cls)), f"class {cls.__qualname__}", lambda: _readers_class_code(cls, seen)
    )
    return f"{code}|{_constant_attributes_text(obj, seen)}"


def _once_per_key(memo: object, label: str, make: Callable[[], str]) -> str:
    """Within a key's text (:data:`_WRITTEN`), a function, a reader's class or object by a
    hash of its whole text, worked out once per key: helpers, classes and objects referring
    to one another cost their number, not their paths. Outside a key, the text itself. Where
    they form a cycle (two helpers calling each other), the text of each depends on which
    was met first: it holds ``<recursion>`` where the cycle closes. Met in a set or as the
    keys of a dict, that order can differ between processes, and the model retrains."""
    written = _WRITTEN.get()
    if written is None:
        return make()
    if memo not in written:
        written[memo] = f"<{label} {_bytes_digest(make().encode())}>"
    return written[memo]


def _constant_attributes_text(obj: object, seen: frozenset[int]) -> str:
    """The attributes of a reader's object that are values of :data:`_CONSTANT_TYPES` (a
    margin, a weight tensor): what it computes with. Lists, dicts and other objects are left
    out: one the loss appends to (a tracker's) would change the key while it trains, and an
    enum's members would walk one another. One the key cannot hold is keyed by its type."""
    parts = []
    for name, v in sorted(_attributes(obj).items()):
        if not isinstance(v, _CONSTANT_TYPES) or (
            callable(v) and not isinstance(v, functools.partial)
        ):
            continue
        try:
            parts.append(f"{name}={value_text(v, seen)}")
        except Exception:  # a meta or sparse tensor, say
            parts.append(f"{name}=<{type(v).__qualname__}>")
    return "{" + ",".join(parts) + "}"


def _readers_function(member: Any) -> Any | None:
    """The reader's function behind a class member: a method, a static or class method, a
    cached property's function, unwrapped from a library's decorator (``@torch.no_grad()``);
    None for anything else, and for what a library puts in a class (an enum's ``__new__``)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if isinstance(member, functools.cached_property):
        member = member.func
    for _ in range(100):  # a chain of library decorators, each with __wrapped__
        if not (inspect.isfunction(member) and _installed(member)):
            break
        member = getattr(member, "__wrapped__", None)
    return member if inspect.isfunction(member) and not _installed(member) else None


def _own_functions(klass: type) -> list[tuple[str, Any]]:
    """The reader's functions a class defines itself, by name (:func:`_readers_function`),
    with the accessors of its properties."""
    found = []
    for name, member in sorted(vars(klass).items()):
        accessors = (
            [(f"{name}.{a}", getattr(member, a)) for a in ("fget", "fset", "fdel")]
            if isinstance(member, property)
            else [(name, member)]
        )
        for label, accessor in accessors:
            fn = _readers_function(accessor)
            if fn is not None:
                found.append((label, fn))
    return found


def _class_constants_text(klass: type, seen: frozenset[int]) -> str:
    """The values of :data:`_CONSTANT_TYPES` a class holds itself (``scale = SCALE``), not
    functions, its own members (an enum's), nor what Python and libraries add under names
    that start and end with an underscore (``__module__``, an enum's ``_use_args_``). One
    the key cannot hold (a meta tensor) is keyed by its type."""
    parts = []
    for name, v in sorted(vars(klass).items()):
        if (
            (name.startswith("_") and name.endswith("_"))
            or not isinstance(v, _CONSTANT_TYPES)
            or (callable(v) and not isinstance(v, functools.partial))
            or (issubclass(klass, enum.Enum) and isinstance(v, klass))
        ):
            continue
        try:
            parts.append(f"{name}={value_text(v, seen)}")
        except Exception:  # a meta or sparse tensor, say
            parts.append(f"{name}=<{type(v).__qualname__}>")
    return ",".join(parts)


def _installed(fn: Any) -> bool:
    """Whether a function was written in an installed file (the standard library, a library,
    pitchtimbre), not by the reader (a notebook cell, ``exec``'d text, a file of theirs)."""
    file = fn.__code__.co_filename
    return os.path.isabs(file) and not is_readers_file(file)


def _readers_class_code(cls: type, seen: frozenset[int]) -> str:
    """The code of a reader's class and of the reader's classes it derives from: each one's
    source, else (a notebook cell's before Python 3.13, a file loaded without a module name)
    its functions, each by :func:`value_text`. With a source: what the functions written in
    it compute with besides their code (:func:`_function_inputs`: a helper they call, a
    default, a value a decorator or ``super()`` closes over), and each function it holds
    that was written elsewhere (``__call__ = distance``) by :func:`value_text`. With the
    constants each class holds (``scale = SCALE``), and the registered losses when it holds
    the registry; other values (an enum's members) are left out. A class whose source is
    all that counts is keyed by that source alone, as before the rest counted."""
    parts = []
    for klass in cls.__mro__:
        if klass is object or not _is_readers(klass):
            continue
        functions = _own_functions(klass)
        try:
            lines, start = inspect.getsourcelines(klass)
            file = inspect.getsourcefile(klass)
        except (OSError, TypeError):
            parts.extend(f"{klass.__qualname__}.{n}={value_text(f, seen)}" for n, f in functions)
        else:
            parts.append("".join(lines))
            reads = []
            for name, fn in functions:
                code = fn.__code__
                if not (  # written outside the class's lines: a wrapper, `__call__ = distance`
                    code.co_filename == file and start <= code.co_firstlineno < start + len(lines)
                ):
                    reads.append(f"{name}={value_text(fn, seen)}")
                elif what := _function_inputs(fn, seen):
                    reads.append(f"{name}:{'|'.join(what)}")
            if reads:
                parts.append(f"{klass.__qualname__} reads " + ",".join(reads))
        constants = _class_constants_text(klass, seen)
        if constants:
            parts.append(f"{klass.__qualname__} holds {constants}")
        if any(_is_registry(getattr(v, "__func__", v)) for v in vars(klass).values()):
            parts.append("registered=" + value_text(dict(CONTRASTIVE_LOSSES), seen))
    return "|".join(parts)


def _code_text(code: CodeType, seen: frozenset[int]) -> str:
    """Compiled code as text: bytecode, constants (nested code too), names."""
    consts = ",".join(value_text(c, seen) for c in code.co_consts)
    return f"{code.co_code.hex()}|{consts}|{code.co_names}"


# global values a function reads that count as what it computes with: values that cannot
# change in place (a list or dict that a loss appends to, a log say, would retrain a model
# each time it grew), tensors and arrays (a tensor the loss changes in place, a memory bank
# say, does retrain a model asked for again)
_CONSTANT_TYPES = (
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type(None),
    tuple,
    frozenset,
    np.generic,
    torch.Tensor,
    np.ndarray,
    functools.partial,
)


_LOADS_OF_GLOBALS = ("LOAD_GLOBAL", "LOAD_NAME")


def _globals_named(code: CodeType) -> set[str]:
    """The global names a function's code and its nested code load (not attribute names:
    ``x.mean()`` does not read a global ``mean``)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in _LOADS_OF_GLOBALS}
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _globals_named(const)
    return names


@functools.cache
def _library_folders() -> tuple[str, ...]:
    """Where installed code lives: the standard library and the site-packages folders (not
    the interpreter's whole prefix: a project may lie under it, as in /usr/src/app)."""
    paths = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


_PACKAGE_FOLDER = os.path.realpath(os.path.dirname(__file__)) + os.sep


@functools.lru_cache(maxsize=4096)  # every value of a key asks; files stay where they are
def is_readers_file(file: str | None) -> bool:
    """Whether a source file holds the reader's own code: a notebook cell's or a ``.py``
    file's outside the standard library, site-packages and pitchtimbre (whose trainer code
    the cache key holds already).

    Chapter: 09_exercises
    """
    if not file or not os.path.isabs(file):  # '<string>', '<frozen ...>', built in
        return False
    return not os.path.realpath(file).startswith((*_library_folders(), _PACKAGE_FOLDER))


def _is_readers(value: Any) -> bool:
    """Whether a module, function, class or object (by its class) is the reader's code."""
    if isinstance(value, ModuleType):
        return is_readers_file(getattr(value, "__file__", None))
    if inspect.ismethod(value):
        value = value.__func__
    if inspect.isfunction(value):
        return is_readers_file(value.__code__.co_filename)
    cls = value if inspect.isclass(value) else type(value)
    if cls.__module__ == "__main__":  # a notebook's class
        return True
    module = sys.modules.get(cls.__module__)
    if module is not None:
        return is_readers_file(getattr(module, "__file__", None))
    # a class of a file loaded without a module name: where its functions were written
    files = [f.__code__.co_filename for f in vars(cls).values() if inspect.isfunction(f)]
    return bool(files) and is_readers_file(files[0])


def _module_code_digest(module: ModuleType) -> str:
    """:func:`modules_digest` of a module; for a package, of every ``.py`` file in its
    folders, read from disk (not what happens to be imported, which changes as it runs)."""
    folders = sorted(getattr(module, "__path__", None) or [])
    if not folders:
        return modules_digest([module])
    digest = hashlib.sha256()
    for folder in folders:
        for file in sorted(Path(folder).rglob("*.py")):
            try:
                text = code_text(file.read_text(encoding="utf-8"))
            except Exception:  # unreadable, or not valid Python: its bytes
                try:
                    text = _bytes_digest(file.read_bytes())
                except OSError:
                    text = "<unreadable>"
            digest.update(f"{file.relative_to(folder)}\n{text}\n".encode())
    return digest.hexdigest()[:16]


def is_readers_module(name: str | None) -> bool:
    """Whether the module called ``name`` is the reader's own code: a notebook (``__main__``)
    or a module of :func:`is_readers_file`.

    Chapter: 09_exercises
    """
    if name == "__main__":
        return True
    module = sys.modules.get(name or "")
    return module is not None and _is_readers(module)


# the names by which code reaches the registered losses (pitchtimbre.losses)
_REGISTRY_NAMES = frozenset({"get_contrastive", "CONTRASTIVE_LOSSES"})
# the instructions that call what is on the stack with positional arguments (their arg: how
# many), from Python 3.8 to 3.13
_CALLS = frozenset(
    {"CALL", "PRECALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_KW", "CALL_FUNCTION_KW"}
)


def _registry_lookups(code: CodeType) -> tuple[bool, set[str] | None]:
    """Whether code (nested code too) reaches the registered losses by one of
    :data:`_REGISTRY_NAMES`, and the names it looks up: None unless every lookup is a call
    of ``get_contrastive`` with one string written out (``get_contrastive('base')``); an
    import under another name, an assignment or the name as a string (``getattr``) counts
    as a name worked out as it runs."""
    reaches, names = False, set()
    ins = list(dis.get_instructions(code))
    imported_at = set()  # `from ... import get_contrastive`: stored under its own name
    for i, instruction in enumerate(ins):
        value = instruction.argval  # a name, a string or any other value
        if i in imported_at or not (isinstance(value, str) and value in _REGISTRY_NAMES):
            continue
        reaches = True
        after = ins[i + 1 : i + 4]
        if (
            instruction.opname == "IMPORT_FROM"
            and after
            and after[0].opname.startswith("STORE")
            and after[0].argval == value
        ):
            imported_at.add(i + 1)
            continue
        if after[1:2] and after[1].opname in ("KW_NAMES", "LOAD_CONST"):
            kw = after[1].argval  # 3.11 and 3.12 name a KW_NAMES tuple by its index only
            kw = code.co_consts[after[1].arg] if after[1].opname == "KW_NAMES" else kw
            if kw == ("name",):  # get_contrastive(name='base')
                after = [after[0], *after[2:]]
        literal = (
            instruction.opname.startswith("LOAD")
            and instruction.opname != "LOAD_CONST"
            and value == "get_contrastive"
            and len(after) >= 2
            and after[0].opname == "LOAD_CONST"
            and isinstance(after[0].argval, str)
            and after[1].opname in _CALLS
            and after[1].arg == 1  # called with that one string: not pick(get_contrastive, 'x')
        )
        if names is not None:
            names = names | {after[0].argval} if literal else None
    for const in code.co_consts:
        if inspect.iscode(const):
            inner_reaches, inner_names = _registry_lookups(const)
            reaches |= inner_reaches
            names = None if names is None or inner_names is None else names | inner_names
    return reaches, names


def _is_registry(value: Any) -> bool:
    """Whether a value is ``get_contrastive``, ``CONTRASTIVE_LOSSES`` or one of its methods
    (``CONTRASTIVE_LOSSES.get``), under whatever name a function holds it."""
    return (
        value is get_contrastive
        or value is CONTRASTIVE_LOSSES
        or getattr(value, "__self__", None) is CONTRASTIVE_LOSSES
    )


def _registered_losses_read(fn: Any) -> dict[str, Any]:
    """The registered losses a function may call by name: those it names, when it looks
    each up as ``get_contrastive('base')``; every one when it works a name out as it runs,
    walks ``CONTRASTIVE_LOSSES`` or holds either under another name (an alias, a default, a
    closure value); none when it does not reach them."""
    reaches, names = _registry_lookups(fn.__code__)
    space = fn.__globals__
    aliases = [space[n] for n in _globals_named(fn.__code__) - _REGISTRY_NAMES if n in space]
    aliases += [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
    aliases += list(_closure_values(fn))
    if any(_is_registry(v) for v in aliases):  # called by a name the code does not show
        reaches, names = True, None
    if not reaches:
        return {}
    if names is None:
        return dict(CONTRASTIVE_LOSSES)
    return {name: f for name, f in CONTRASTIVE_LOSSES.items() if name in names}


def _globals_read(fn: Any) -> dict[str, Any]:
    """The module-level values a function reads that can change what it computes: constants
    (:data:`_CONSTANT_TYPES`), and the modules, functions, classes and objects of the
    reader's own code (:func:`is_readers_file`: a notebook's helper function; a helpers file
    beside it, imported whole or in part). Dunder names (``__file__``) and what installed
    libraries define (torch, numpy, the package) are left out: their code is not the
    reader's."""
    found = {}
    space = fn.__globals__
    for name in sorted(_globals_named(fn.__code__)):
        dunder = name.startswith("__") and name.endswith("__")  # __file__, __name__
        if name not in space or dunder:
            continue
        value = space[name]
        if isinstance(value, ModuleType):
            if _is_readers(value):
                found[name] = value
            continue
        defined_in = getattr(value, "__module__", None) if callable(value) else None
        if isinstance(value, _CONSTANT_TYPES) and (
            isinstance(value, functools.partial) or not callable(value)
        ):
            found[name] = value
        elif defined_in == fn.__module__ or (
            not callable(value) and type(value).__module__ == fn.__module__
        ):
            found[name] = value
        elif _is_readers(value):
            found[name] = value
    return found


def _globals_text(fn: Any, seen: frozenset[int]) -> str:
    """:func:`value_text` of each global a function reads; one that cannot be written as
    text (its ``repr`` raises, say) is keyed by its type alone, with a warning."""
    parts = []
    for name, value in _globals_read(fn).items():
        try:
            text = value_text(value, seen)
        except Exception as exc:  # a reader's object: its repr may raise, recurse too deep
            log.warning(
                "%s reads the global %s, which the model cache's key cannot hold (%s: %s): "
                "changing it will not retrain: after changing it, train with "
                "trained_model(..., retrain=True)",
                getattr(fn, "__qualname__", fn),
                name,
                type(exc).__name__,
                exc,
            )
            text = f"<{type(value).__qualname__}>"
        parts.append(f"{name}:{text}")
    return "{" + ",".join(parts) + "}" if parts else ""


def _lambda_extra(code: CodeType, snippet: list[str], start: int, seen: frozenset[int]) -> str:
    """What a lambda's source lines (``snippet``, from line ``start``) do not say of it
    alone: empty when they hold this lambda and no other. Else its own expression, cut from
    the file by the positions of its instructions, and its arguments: two lambdas on one
    line share their lines, and on Python 3.11 the lines of a lambda that starts on a
    continuation line can stop before its end. Zero-width positions (3.11's RESUME and
    RETURN_VALUE) are left out, so the cut is mostly the same text on 3.11 to 3.13. Without
    positions (3.12 compiles ``lambda: None`` to one zero-width instruction) the compiled
    code stands in for the expression."""
    spans = [p for p in code.co_positions() if None not in p and (p[0], p[2]) != (p[1], p[3])]
    first, col = min(((p[0], p[2]) for p in spans), default=(0, 0))
    last, end = max(((p[1], p[3]) for p in spans), default=(0, 0))
    others = 0
    try:  # lambda keywords on the lines, outside this lambda's own expression
        for tok in tokenize.generate_tokens(io.StringIO("".join(snippet)).readline):
            if tok.type == tokenize.NAME and tok.string == "lambda":
                line = start + tok.start[0] - 1
                at = (line, len(snippet[tok.start[0] - 1][: tok.start[1]].encode()))
                others += not (spans and (first, col) <= at < (last, end))
    except (tokenize.TokenError, IndentationError, SyntaxError):  # lines cut mid-expression:
        others = 2  # what else they hold cannot be told
    if others <= 1 and last < start + len(snippet):
        return ""
    try:
        lines = inspect.findsource(code)[0]
    except (OSError, TypeError):
        lines = []
    if spans and lines:
        text = b"".join(line.encode() for line in lines[first - 1 : last])
        # positions count UTF-8 bytes from the start of their own line
        cut = len(text) - len(lines[last - 1].encode()) + end
        body = text[col:cut].decode(errors="replace")
    else:
        body = _code_text(code, seen)
    n_args = code.co_argcount + code.co_kwonlyargcount
    n_args += bool(code.co_flags & inspect.CO_VARARGS) + bool(
        code.co_flags & inspect.CO_VARKEYWORDS
    )
    shape = f"{code.co_posonlyargcount},{code.co_kwonlyargcount},{code.co_flags & 0x0C}"
    return f"body={body}|args={','.join(code.co_varnames[:n_args])}/{shape}"


_WRITTEN: contextvars.ContextVar[dict[object, str] | None] = contextvars.ContextVar(
    "pitchtimbre_written_functions", default=None
)
"""While :func:`loss_source` makes a text: the functions and the reader's classes met in it
so far, each with the text that stands for it (:func:`_once_per_key`)."""


def _function_text(fn: Any, seen: frozenset[int]) -> str:
    """A Python function: its source (else its compiled code), and the defaults, closure
    values and module-level values (:func:`_globals_read`) it computes with; for a lambda
    whose lines do not identify it alone, its own expression and arguments too
    (:func:`_lambda_extra`)."""
    code = fn.__code__
    try:  # of its own code: getsource(fn) would give a @functools.wraps wrapper's wrapped
        snippet, start = inspect.getsourcelines(code)
    except (OSError, TypeError):
        parts = [_code_text(code, seen)]
    else:
        parts = ["".join(snippet)]
        extra = _lambda_extra(code, snippet, start, seen) if code.co_name == "<lambda>" else ""
        if extra:  # a lambda alone on its lines keeps the key it had before this was added
            parts.append(extra)
    return "|".join(parts + _function_inputs(fn, seen))


def _closure_values(fn: Any) -> tuple[Any, ...]:
    """The values a function closes over (``<empty>`` for a cell not filled yet)."""
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:
            cells.append("<empty>")
    return tuple(cells)


def _function_inputs(fn: Any, seen: frozenset[int]) -> list[str]:
    """What a function computes with besides its code: its defaults, the values it closes
    over, the module-level values it reads (:func:`_globals_text`) and the registered losses
    it calls by name (:func:`_registered_losses_read`). Each part is absent when empty, so a
    key without them is what it was before they counted."""
    parts = []
    if fn.__defaults__:
        parts.append("defaults=" + value_text(fn.__defaults__, seen))
    if fn.__kwdefaults__:
        parts.append("kwdefaults=" + value_text(fn.__kwdefaults__, seen))
    if fn.__closure__:
        parts.append("closure=" + value_text(_closure_values(fn), seen))
    read = _globals_text(fn, seen)
    if read:
        parts.append("globals=" + read)
    registered = _registered_losses_read(fn)
    if registered:  # editing one of them and registering it again retrains
        parts.append("registered=" + value_text(registered, seen))
    return parts


def _class_text(cls: type, seen: frozenset[int]) -> str:
    """A class's source, else (a class defined in a notebook, before Python 3.13) what each
    of its own classes in the MRO defines: functions, static and class methods, properties
    and plain values. A reader's class with its source: :func:`_readers_class_code`."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        pass
    else:
        return _readers_class_code(cls, seen) if _is_readers(cls) else source
    parts = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, member in sorted(vars(klass).items()):
            if name.startswith("__") and name.endswith("__") and not inspect.isfunction(member):
                continue  # __dict__, __module__, __doc__, __weakref__ ...
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            elif isinstance(member, property):
                member = (member.fget, member.fset, member.fdel)
            parts.append(f"{klass.__qualname__}.{name}={value_text(member, seen)}")
    return "|".join(parts)


def _attributes(obj: object) -> dict[str, Any]:
    """An object's attributes, from its ``__dict__`` and its ``__slots__``."""
    found = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            stored = f"_{cls.__name__.lstrip('_')}{name}" if name.startswith("__") else name
            if hasattr(obj, stored):
                found[name] = getattr(obj, stored)
    return found


def loss_source(fn: object, seen: frozenset[int] = frozenset()) -> str:
    """The text that identifies a loss function's code across sessions: a function's source
    (else its compiled code) with its defaults and closure values; for a
    ``functools.partial``, its function's and its arguments; for a callable object, its
    class's code and its attributes (a bound method: its object's too). The functions it
    reads are written by a hash of their text (:func:`value_text`).

    Chapter: 05_training
    """
    if _WRITTEN.get() is None:  # the outermost call: a fresh record of the functions met
        token = _WRITTEN.set({})
        try:
            return loss_source(fn, seen)
        finally:
            _WRITTEN.reset(token)
    inner = seen | {id(fn)}
    if isinstance(fn, functools.partial):
        return (
            f"partial({value_text(fn.func, inner)}, args={value_text(fn.args, inner)}, "
            f"keywords={value_text(fn.keywords, inner)})"
        )
    if inspect.ismethod(fn):  # a bound method: its code and the object it is bound to
        return f"{value_text(fn.__func__, inner)}|{value_text(fn.__self__, inner)}"
    if inspect.isclass(fn):
        return _class_text(fn, inner)
    if inspect.isfunction(fn):
        return _function_text(fn, inner)
    if inspect.isroutine(fn) and hasattr(fn, "__wrapped__"):  # @functools.cache, say
        return f"wrapped({loss_source(fn.__wrapped__, inner)})"
    if inspect.isroutine(fn):  # a builtin: torch.abs, a numpy ufunc
        return _ADDRESS.sub("", repr(fn))
    return f"{_class_text(type(fn), inner)}|{value_text(_attributes(fn), inner)}"


def _is_bare_string(statement: ast.stmt) -> bool:
    """A docstring, or any string standing alone as a statement: it computes nothing."""
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def code_text(source: str) -> str:
    """Python source as the code it runs: docstrings (and any other string standing alone
    as a statement), comments, trailing spaces and blank lines left out, so that rewording a
    docstring or a comment does not retrain a model and changing a statement does. Cut out
    of the source text by the positions the parser and the tokenizer give, which every
    Python version gives alike (:func:`ast.unparse` would not: it quotes some strings
    differently from 3.12 on). The lines inside a string literal are kept as they are.

    Chapter: 05_training
    """
    data = source.encode()
    lines = io.StringIO(source).readlines()  # split at "\n" only, as the tokenizer splits
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line.encode()))

    def offset(row: int, col: int) -> int:  # a tokenizer's position: col counts characters
        return starts[row - 1] + len(lines[row - 1][:col].encode())

    docstrings = [
        (
            starts[node.lineno - 1] + node.col_offset,
            starts[node.end_lineno - 1] + node.end_col_offset,
        )
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.stmt) and _is_bare_string(node) and node.end_lineno is not None
    ]
    cuts = list(docstrings)
    in_string: set[int] = set()  # rows whose line break is part of a string literal
    depth, opened = 0, 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tokenize.tok_name[token.type]
        if kind == "COMMENT":  # a comment never spans lines
            cuts.append((offset(*token.start), offset(*token.end)))
        elif kind == "FSTRING_START":  # Python 3.12 on: an f-string comes in parts
            opened, depth = (token.start[0] if depth == 0 else opened), depth + 1
        elif kind == "FSTRING_END":
            depth -= 1
            if depth == 0:
                in_string.update(range(opened, token.end[0]))
        elif kind == "STRING" and depth == 0:
            at = offset(*token.start)
            if not any(begin <= at < end for begin, end in docstrings):
                in_string.update(range(token.start[0], token.end[0]))
    kept, at = [], 0
    for begin, end in sorted(cuts):
        if begin >= at:
            kept.append(data[at:begin])
            kept.append(b"\n" * data[begin:end].count(b"\n"))  # rows keep their numbers
            at = end
    kept.append(data[at:])
    rows = b"".join(kept).decode().split("\n")
    return "\n".join(
        row if number in in_string else row.rstrip()
        for number, row in enumerate(rows, start=1)
        if number in in_string or row.strip()
    )


def modules_digest(modules: Sequence[ModuleType]) -> str:
    """A hash of :func:`code_text` of each module's source file, in the order given.

    Chapter: 05_training
    """
    digest = hashlib.sha256()
    for module in modules:
        try:
            code = code_text(inspect.getsource(module))
        except (OSError, TypeError):  # installed without its sources: the compiled file
            code = _bytes_digest(Path(module.__file__).read_bytes()) if module.__file__ else ""
        digest.update(f"{module.__name__}\n{code}\n".encode())
    return digest.hexdigest()[:16]
