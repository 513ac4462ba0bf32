"""Plain data from untrusted text: YAML read with the safe loader's rules plus bounds (size, depth, duplicate
keys), and the measure of a value's size that refuses alias and shared-reference bombs before anything expands
them. Configs, ``--set`` values and checkpoints' stored configs all pass through here (:mod:`stcsnn.config`)."""

from __future__ import annotations

import functools
import itertools
import typing
from typing import Any

from stcsnn.errors import ConfigError, quoted, short

# Bounds on what a config may hold (a config is a few dozen settings). They refuse hostile input, such as a YAML
# alias bomb or a checkpoint whose config repeats one list 2**40 times, before anything expands it.
MAX_NODES = 100_000  # values (containers, keys and scalars), an alias or shared reference counted at each use
MAX_DEPTH = 50  # levels of nesting
MAX_YAML_CHARS = 64 * 1024  # PyYAML's pure-Python parser reads only about 60 k characters a second


def _py_children(x: Any) -> typing.Iterable[Any] | None:
    if isinstance(x, dict):
        return itertools.chain.from_iterable(x.items())
    if isinstance(x, (list, tuple, set, frozenset)):
        return x
    return None


def _measure(root: Any, children: typing.Callable[[Any], typing.Iterable[Any] | None], what: str,
             where: typing.Callable[[Any], str] = lambda node: "") -> int:
    """The number of values in ``root``, counting a shared part each time it is referenced (memoised by id, so a
    shared-reference bomb is measured without being expanded); a ConfigError past MAX_NODES / MAX_DEPTH or for
    a value that contains itself."""
    known: dict[int, tuple[int, int] | None] = {}  # id -> (size, height); None while being measured

    def measure(node: Any, depth: int) -> tuple[int, int]:
        kids = children(node)
        if kids is None:
            return 1, 0
        key = id(node)  # ids are stable here: every node stays reachable from root during the walk
        if key in known:
            seen = known[key]
            if seen is None:
                raise ConfigError(f"{what} contains itself{where(node)}; expected plain values, not a cycle")
            size, height = seen
        else:
            if depth >= MAX_DEPTH:
                raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep{where(node)}")
            known[key] = None
            size, height = 1, 0
            for kid in kids:
                kid_size, kid_height = measure(kid, depth + 1)
                size, height = size + kid_size, max(height, kid_height + 1)
                if size > MAX_NODES:
                    break
            known[key] = size, height
        if size > MAX_NODES:
            raise ConfigError(f"{what} holds more than {MAX_NODES:,} values{where(node)} (an alias or shared "
                              "reference counts at each use); a config is a few dozen settings")
        if depth + height > MAX_DEPTH:
            raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep{where(node)}")
        return size, height

    return measure(root, 0)[0]


def check_size(value: Any, what: str = "config") -> None:
    """Refuse ``value`` (a config dict or one value) if it is too large, too deep or contains itself."""
    _measure(value, _py_children, what)


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # a core dependency, missing only from a broken or partial install
        raise ConfigError(f"reading YAML configs needs PyYAML, a dependency of stcsnn that is not installed ({exc}); "
                          "install it: pip install pyyaml (or reinstall stcsnn)") from None
    return yaml


@functools.lru_cache(maxsize=1)
def _loader() -> type:
    """A ``yaml.SafeLoader`` (plain data only, no tag constructs an object) that also refuses duplicate keys and
    documents too large or too deep, measured on the composed node graph before any value is constructed."""
    yaml = _yaml()

    def children(node: Any) -> typing.Iterable[Any] | None:
        if isinstance(node, yaml.MappingNode):
            return itertools.chain.from_iterable(node.value)
        return node.value if isinstance(node, yaml.SequenceNode) else None

    def line(node: Any) -> str:
        return f" (line {node.start_mark.line + 1})"

    class StrictSafeLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            # PyYAML composes recursively: stop deep nesting before Python's recursion limit does
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise ConfigError(f"YAML is nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _measure(node, children, "YAML", line)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merge keys (<<) may be overridden; unhashable keys are refused by PyYAML
                key = self.construct_object(key_node)
                at = key_node.start_mark.line + 1
                if key in first:
                    raise ConfigError(f"duplicate key {short(key)} on line {at} (first on line {first[key]}); "
                                      "expected each key once")
                first[key] = at
            return super().construct_mapping(node, deep)

    return StrictSafeLoader


def _yaml_reason(exc: Exception) -> str:
    """One line saying what is wrong with a YAML text, and where."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem:
        return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load(text)`` with the checks of this module (size, depth, duplicate keys); ``what`` names
    the text in messages (``config file 'x.yaml'``, ``--set value '...'``)."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{what} is {len(text):,} characters long; expected a config of at most "
                          f"{MAX_YAML_CHARS:,} (settings, not data)")
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_loader())
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError, or a value PyYAML cannot build (e.g. a 5000-digit integer)
        raise ConfigError(f"{what} is not valid YAML: {_yaml_reason(exc)}") from None


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value as YAML (``[64,64]`` -> list, ``1e-3`` -> float, ``null`` -> None)."""
    return load_yaml(text, f"value {quoted(text)}")


def dump_yaml(data: Any) -> str:
    """``data`` (plain values) as YAML text, keys in their order."""
    return _yaml().safe_dump(data, sort_keys=False)
