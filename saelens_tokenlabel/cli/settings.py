"""A run's settings as a file: ``tokenlabel label --config run.yaml`` reads one (flags given
as well override it), ``tokenlabel config DIR`` prints a run's bound settings as one, so a run
can be repeated or diffed.

The file has one section per config, each holding that config's fields (nested configs as
mappings), every section optional::

    label:      {lr: 0.03, ..., performance: {use_cache: true, ...}}    # LabelConfig
    examples:   {n_top: 20, ...}                                        # ExampleConfig
    cache:      {context_size: null, ...}                               # CacheConfig
    scores:     {scorers: [output_side, coherence, steering], options: {}}   # ScoreConfig
    amortize:   null                     # AmortizeConfig (a mapping turns the mode on)

YAML rather than TOML: the settings hold nulls (``steps: null`` is "from `epochs`", and a null
``amortize`` is "off"), which TOML cannot write; YAML can carry a comment per section; and
PyYAML comes with transformers anyway (declared as a dependency all the same). A key that is no
field of its config is a one-line error naming the file and the key: a misspelt setting must
not be ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records.config import LabelConfig
from ..records.serial import Config, field_types
from ..run.amortise.config import AmortizeConfig
from ..sae.config import CacheConfig, ExampleConfig
from ..sae.scorers.registry import DEFAULT_SCORERS
from .flags import ConfigFlags
from .shared import LABEL_FLAGS

CACHE_FLAGS = ConfigFlags(
    CacheConfig, title="activation cache (CacheConfig)", dest_prefix="cache_",
    renames={"batch_size": "--cache-batch-size", "overwrite": "--overwrite-cache"})
"""CacheConfig's flags; `batch_size` and `overwrite` renamed beside LabelConfig's."""
AMORTIZE_FLAGS = ConfigFlags(
    AmortizeConfig, title="amortised labels (AmortizeConfig; with --amortize)",
    dest_prefix="amortize_",
    renames={f: "--amortize-" + f.replace("_", "-")
             for f in AmortizeConfig.__dataclass_fields__})
"""AmortizeConfig's flags, each ``--amortize-<field>``: read with ``--amortize`` only."""
EXAMPLE_FLAGS = ConfigFlags(ExampleConfig, title="examples per feature (ExampleConfig)",
                            dest_prefix="examples_", renames={"seed": "--example-seed"})
"""ExampleConfig's flags; `seed` renamed beside LabelConfig's."""
SECTIONS: dict[str, type[Config]] = {"label": LabelConfig, "examples": ExampleConfig,
                                     "cache": CacheConfig, "amortize": AmortizeConfig}
"""The file's sections that are configs with flags (``scores`` has flags of its own)."""
INFO_KEYS = {"label": "label_config", "examples": "example_config", "cache": "cache_config",
             "scores": "score_config"}
"""Where a run's info records each section's config."""


@dataclass(frozen=True)
class Settings:
    """Every config a `tokenlabel label` run takes."""

    label: LabelConfig
    examples: ExampleConfig
    cache: CacheConfig
    scores: Any
    """A `ScoreConfig` (imported when the command runs: it needs the scorer registry)."""
    amortize: AmortizeConfig | None


def read_file(path: str | Path) -> dict[str, Any]:
    """The sections of a settings file, each checked against its config's fields."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file; print one of a run with "
                                "`tokenlabel config DIR`.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path} is not a YAML file ({' '.join(str(err).split())})"
                         "; print a valid one with `tokenlabel config DIR`.") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected sections ({', '.join(INFO_KEYS)}, "
                         "amortize), got a {type(data).__name__}.")
    unknown = sorted(set(data) - {*SECTIONS, "scores"})
    if unknown:
        raise ValueError(f"--config {path}: unknown section(s) {', '.join(unknown)}; the "
                         f"sections are {', '.join([*SECTIONS, 'scores'])}.")
    for name, cls in SECTIONS.items():
        if data.get(name) is not None:
            _check_keys(cls, data[name], f"{path}: {name}")
    return data


def _check_keys(cls: type, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"--config {where}: expected the fields of {cls.__name__} as a "
                         f"mapping, got {values!r}.")
    hints = field_types(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields - set(getattr(cls, "MOVED_FIELDS", {})))
    if unknown:
        raise ValueError(f"--config {where}: {cls.__name__} has no field "
                         f"{', '.join(map(repr, unknown))}.")
    for name, value in values.items():
        sub = _config_class(hints.get(name))
        if sub is not None and isinstance(value, dict):
            _check_keys(sub, value, f"{where}.{name}")


def _config_class(tp: Any) -> type | None:
    options = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    tp = options[0] if len(options) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, Config) else None


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s values over it, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                          dict) else v
    return out


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's configs: the `--config` file's sections, the flags given over them."""
    file = read_file(args.config) if args.config else {}
    flagged = {"label": LABEL_FLAGS, "examples": EXAMPLE_FLAGS, "cache": CACHE_FLAGS}
    built = {name: SECTIONS[name].from_dict(_merged(file.get(name) or {}, f.values(args)))
             for name, f in flagged.items()}
    amortize_given = AMORTIZE_FLAGS.values(args)
    on = bool(args.amortize) or file.get("amortize") is not None
    if amortize_given and not on:
        raise ValueError("The --amortize-* flags set the amortised mode: add --amortize.")
    amortize = (AmortizeConfig.from_dict(_merged(file.get("amortize") or {}, amortize_given))
                if on else None)
    return Settings(built["label"], built["examples"], built["cache"],
                    _score_config(args, file.get("scores") or {}), amortize)


def _score_config(args: argparse.Namespace, section: Mapping[str, Any]) -> Any:
    from ..sae.scorers.apply import ScoreConfig

    names = list(args.score) if args.score else list(section.get("scorers", DEFAULT_SCORERS))
    names = [n for n in names if n not in args.no_score]
    options = {k: dict(v) for k, v in (section.get("options") or {}).items()}
    for item in args.score_option:
        key, eq, value = item.partition("=")
        name, dot, fld = key.partition(".")
        if not (eq and dot and name and fld):
            raise ValueError(f"--score-option {item!r}: write NAME.FIELD=VALUE, e.g. "
                             "output_side.k=20.")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        options.setdefault(name, {})[fld] = parsed
    return ScoreConfig(scorers=tuple(names), options=options)


def settings_yaml(sections: Mapping[str, Any], comment: str) -> str:
    """The sections as a settings file, `comment` on top, each section's config named."""
    import yaml

    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    for name in ("label", "examples", "cache", "scores", "amortize"):
        if name not in sections:
            lines += ["", f"# {name}: not recorded by this run (an older version); defaults."]
            continue
        cls = {**SECTIONS, "scores": None}[name]
        lines += ["", f"# {cls.__name__ if cls else 'ScoreConfig'}"]
        lines.append(yaml.safe_dump({name: sections[name]}, sort_keys=False,
                                    default_flow_style=False, allow_unicode=True).rstrip())
    return "\n".join(lines) + "\n"


def add_config_parser(sub: Any) -> None:
    """Register ``tokenlabel config DIR``."""
    p = sub.add_parser("config", help="print a run's settings as a --config file",
                       description="Print the settings a run in DIR was made with (its "
                                   "LabelConfig, ExampleConfig, CacheConfig, ScoreConfig and "
                                   "AmortizeConfig) as a YAML file that `tokenlabel label "
                                   "--config FILE` takes: to repeat the run, or diff two.")
    p.add_argument("dir", help="the run's --out folder (or its run.sqlite)")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from ..run.store import RunStore

    with RunStore(args.dir, create=False) as store:
        info = store.get_meta("info", {}) or {}
        amortize = store.get_meta("amortize")
    sections: dict[str, Any] = {name: info[key] for name, key in INFO_KEYS.items()
                                if key in info}
    sections["amortize"] = amortize
    print(settings_yaml(sections, f"The settings of the run in {args.dir}; repeat it with\n"
                                  "tokenlabel label --config THIS_FILE (the SAE, models, "
                                  "corpus, features and --out as flags)."), end="")
    return 0
