"""The config's section setters, built from the option table: `config.training(kl_coef=0.02)`
stores the option, and passes RLlib's own options (`lr`, `num_epochs`, ...) on to RLlib's setter.
The signature and docstring list every option of the section with its default and rule, so
`help(config.training)`, the CLI's `--set` keys and RLlib-style keyword calls all see the table."""

from __future__ import annotations

import inspect

from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_rpp import options


def section_setter(section: str, summary: str, rllib_setter=None):
    """`config.<section>(**kwargs)`: ours stored as attributes; the rest go to `rllib_setter` (RLlib's
    method of the same name), or are refused when RLlib has none."""
    names = tuple(o.name for o in options.of_section(section) if not o.rllib)

    def setter(self, **kwargs):
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        if rllib_setter is not None:
            rllib_setter(self, **kwargs)
        elif kwargs:
            raise TypeError(f"{section}() got unknown option(s) {sorted(kwargs)}; its options: {list(names)}")
        for name, value in ours.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=NotProvided) for n in names]
    if rllib_setter is not None:
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    setter.__signature__ = inspect.Signature(params)
    setter.__name__ = setter.__qualname__ = section
    setter.__doc__ = options.setter_doc(section, summary)
    return setter
