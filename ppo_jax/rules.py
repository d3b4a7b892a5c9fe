"""The rules PPOConfig's fields obey, and the checks that raise a ValueError naming the field.

A field is a dataclass field with its meaning (`help`) and its rule in the metadata;
`check_field` checks a value's type (finite numbers, bools apart from ints) and then its rule.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a field's value must satisfy; `text` completes "<field> (<value>) must be ..."."""

  ok: Callable[[Any], bool]
  text: str


def one_of(choices: tuple[str, ...]) -> Rule:
  return Rule(lambda v: v in choices, f"one of {choices}")


COUNT = Rule(lambda v: v >= 1, ">= 1")
# Counted on the device in int32.
COUNTER = Rule(lambda v: 1 <= v < 2**31, "in [1, 2**31): the device counts it in int32")
POSITIVE = Rule(lambda v: v > 0, "> 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0")
FRACTION = Rule(lambda v: 0 < v < 1, "in (0, 1)")
LAYER_SIZES = Rule(
  lambda v: len(v) >= 1 and all(n >= 1 for n in v), "a non-empty tuple of positive ints"
)


def setting(default: Any, help: str, rule: Rule | None = None) -> Any:
  """A config field: its default, its meaning (the CLI's --help shows it) and its rule."""
  return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


# Field type (as annotated) -> (accepted kinds, description for the error message).
_KINDS = {
  "int": ((numbers.Integral,), "an int"),
  "float": ((numbers.Real,), "a number"),
  "bool": ((bool,), "a bool"),
  "str": ((str,), "a string"),
  "tuple[int, ...]": ((tuple,), "a tuple of ints"),
}


def _is_finite(value: numbers.Real) -> bool:
  """True for a number that is a finite float (math.isfinite overflows on ints past 1e308)."""
  try:
    return math.isfinite(value)
  except OverflowError:
    return False


def check_field(field: dataclasses.Field, value: Any) -> None:
  """The field's type (finite numbers, bools apart from ints), then its rule."""
  optional = field.type.endswith(" | None")
  if value is None and optional:
    return
  kinds, description = _KINDS[field.type.removesuffix(" | None")]
  ok = isinstance(value, kinds) and (isinstance(value, bool) == (kinds == (bool,)))
  if ok and isinstance(value, tuple):
    ok = all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool) and _is_finite(v) for v in value
    )
  if ok and isinstance(value, numbers.Real) and not _is_finite(value):
    ok = False
  none = " or None" if optional else ""
  if not ok:
    raise ValueError(
      f"{field.name} must be {description}{none} (finite), got {value!r} "
      f"of type {type(value).__name__}"
    )
  rule = field.metadata["rule"]
  if rule is not None and not rule.ok(value):
    raise ValueError(f"{field.name} ({value!r}) must be {rule.text}{none}")


def require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)
