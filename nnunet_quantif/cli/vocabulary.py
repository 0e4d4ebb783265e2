"""One name per idea across the ``quantif`` commands, and hidden aliases for the old spellings.

The vocabulary (``docs/CLI.md``) follows nnU-Net's and TotalSegmentator's spellings where they have one:
``-i/--input`` for what a command reads, ``-d/--dataset`` for an nnU-Net dataset id or name, ``--folds``
for a list of fold numbers (``--num-folds`` for a count), ``--device cuda|cpu|mps``, ``--quiet`` for no
progress bars, ``--gt`` for ground-truth labels, ``--click-step`` for how many clicks of a file to use,
``--num-clicks`` for how many clicks to make, ``--tracer-weights`` for the tracer classifier's weights.

An old spelling stays accepted for one release as a hidden alias: it parses into the same attribute, is
left out of ``--help``, and using it prints a one-line note naming the new spelling on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["add_option", "hide_aliases", "HIDDEN_ALIASES_ATTR"]

#: Attribute of an argparse action that lists its hidden option strings.
HIDDEN_ALIASES_ATTR = "hidden_aliases"

_warning_classes: dict[type, type] = {}


def _with_note(cls: type[argparse.Action]) -> type[argparse.Action]:
    """``cls`` with a ``__call__`` that notes the use of a hidden alias on stderr."""
    if cls not in _warning_classes:
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: N807
            hidden = getattr(self, HIDDEN_ALIASES_ATTR, ())
            if option_string in hidden:
                new = next(s for s in self.option_strings if s not in hidden and s.startswith("--"))
                print(f"{parser.prog}: note: {option_string} is an old spelling of {new} (it will be removed)",
                      file=sys.stderr)
            return cls.__call__(self, parser, namespace, values, option_string)

        _warning_classes[cls] = type(cls.__name__, (cls,), {"__call__": __call__})
    return _warning_classes[cls]


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str,
               aliases: Sequence[str] = (), **kwargs) -> argparse.Action:
    """``parser.add_argument(*flags, *aliases, **kwargs)``, with ``aliases`` hidden from ``--help``.

    Parameters
    ----------
    parser : ArgumentParser or argument group
    flags : str
        The option strings of the vocabulary (the first long one is named in notes).
    aliases : sequence of str
        Old spellings, accepted but not shown (:func:`hide_aliases` must run on the root parser).
    kwargs
        As for ``add_argument``.
    """
    action = parser.add_argument(*flags, *aliases, **kwargs)
    if aliases:
        setattr(action, HIDDEN_ALIASES_ATTR, tuple(aliases))
        action.__class__ = _with_note(type(action))
    return action


class _HideAliases:
    """Help-formatter mixin that leaves an action's hidden aliases out of ``--help`` and the usage line."""

    def _strip(self, action: argparse.Action) -> argparse.Action:
        hidden = getattr(action, HIDDEN_ALIASES_ATTR, ())
        if not hidden:
            return action
        shown = argparse.Action.__new__(type(action))
        shown.__dict__.update(action.__dict__)
        shown.option_strings = [s for s in action.option_strings if s not in hidden]
        return shown

    def _format_action_invocation(self, action):  # noqa: D401 - argparse's hook
        return super()._format_action_invocation(self._strip(action))

    def _format_usage(self, usage, actions, groups, prefix):
        return super()._format_usage(usage, [self._strip(a) for a in actions], groups, prefix)


_formatters: dict[type, type] = {}


def hide_aliases(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every sub-parser a help formatter that hides aliases (in place)."""
    fc = parser.formatter_class
    if not issubclass(fc, _HideAliases):
        if fc not in _formatters:
            _formatters[fc] = type(f"HideAliases{fc.__name__}", (_HideAliases, fc), {})
        parser.formatter_class = _formatters[fc]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                hide_aliases(sub)
