"""Config dataclasses -> command-line flags -> configs again (`cli/flags.py`)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.cli import build_parser, main
from saelens_tokenlabel.cli.flags import ConfigFlags, field_docs
from saelens_tokenlabel.cli.label import CACHE_FLAGS, EXAMPLE_FLAGS
from saelens_tokenlabel.cli.shared import LABEL_FLAGS
from saelens_tokenlabel.records.serial import Config
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig


@dataclass
class Inner(Config):
    """A nested config."""

    use_cache: bool = True
    """Reuse the cache. Exact: same results."""
    eval_batch_size: int = 64
    """Rows per pass (100% exact)."""
    mode: Literal["fast", "slow"] = "fast"
    """How to go."""

    def check(self) -> None:
        self.need(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")


@dataclass
class Outer(Config):
    """A config with every kind of field."""

    lr: float = 0.1
    """Learning rate."""
    steps: int | None = None
    """Exact steps. Overrides epochs."""
    name: str = "x"
    """A name."""
    where: Path | None = None
    """A folder."""
    kind: Literal["a", "b"] = "a"
    """Which kind."""
    flag: bool = False
    """A switch."""
    restarts: tuple[dict[str, float], ...] = ()
    """Further attempts, e.g. [{"lr": 0.2}]."""
    performance: Inner = field(default_factory=Inner)
    """Speed knobs."""


FLAGS = ConfigFlags(Outer, title="outer", renames={"name": "--outer-name"})


def parse(*argv: str, flags: ConfigFlags = FLAGS) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="t")
    flags.add(p)
    return p.parse_args(list(argv))


def test_every_kind_of_field_becomes_a_flag_and_comes_back():
    args = parse("--lr", "0.5", "--steps", "7", "--outer-name", "y", "--where", "/tmp/w",
                 "--kind", "b", "--flag", "--restarts", '{"lr": 0.2}', "--no-use-cache",
                 "--eval-batch-size", "8", "--mode", "slow")
    cfg = FLAGS.build(args)
    assert cfg == Outer(lr=0.5, steps=7, name="y", where=Path("/tmp/w"), kind="b", flag=True,
                        restarts=({"lr": 0.2},),
                        performance=Inner(use_cache=False, eval_batch_size=8, mode="slow"))
    assert isinstance(cfg.performance, Inner)


def test_unset_flags_keep_the_defaults_and_nested_fields_merge_with_theirs():
    assert FLAGS.values(parse()) == {}
    assert FLAGS.build(parse()) == Outer()
    args = parse("--eval-batch-size", "3")
    assert FLAGS.values(args) == {"performance": {"eval_batch_size": 3}}
    assert FLAGS.build(args).performance == Inner(eval_batch_size=3)
    assert parse("--steps", "2").flag is None  # a bool not given is None, not False


def test_bad_choice_is_one_line_listing_the_choices(capsys):
    for argv, choices in ((["--kind", "c"], "'a', 'b'"), (["--mode", "x"], "'fast', 'slow'")):
        with pytest.raises(SystemExit) as exc:
            parse(*argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "invalid choice" in err and choices in err


def test_bad_json_and_bad_numbers_are_argparse_errors(capsys):
    for argv, msg in ((["--restarts", "{lr"], "not JSON"), (["--restarts", "[1]"],
                      "list of objects"), (["--steps", "1.5"], "invalid int")):
        with pytest.raises(SystemExit):
            parse(*argv)
        assert msg in capsys.readouterr().err


def test_help_is_the_first_sentence_of_the_field_docstring():
    p = argparse.ArgumentParser(prog="t")
    FLAGS.add(p)
    text = " ".join(p.format_help().split())
    assert "Exact steps." in text and "Overrides epochs" not in text
    assert "Reuse the cache." in text and "(100% exact)" in text
    assert "--use-cache, --no-use-cache" in text and "{a,b}" in text and "{fast,slow}" in text
    assert field_docs(Outer)["performance"] == "Speed knobs."


def test_help_shows_each_configs_default():
    p = argparse.ArgumentParser(prog="t")
    FLAGS.add(p)
    text = " ".join(p.format_help().split())
    assert "Learning rate. (default: 0.1)" in text
    assert "Which kind. (default: a)" in text and "A switch. (default: off)" in text
    assert "Reuse the cache. Exact: same results." not in text  # the first sentence only
    assert "Reuse the cache. (default: on)" in text and "(100%% exact)" not in text
    assert "Rows per pass (100% exact). (default: 64)" in text  # nested: its own default
    assert "Exact steps. --" in text  # None is left to the docstring
    # The real commands: every LabelConfig flag says its default; long ones point at it.
    label = " ".join(build_parser()._subparsers._group_actions[0].choices[  # noqa: SLF001
        "label"].format_help().split())
    assert f"(default: {LabelConfig().lr})" in label
    assert "(default: see LabelConfig.restarts)" in label
    assert "(default: 0:100, 1,5,9 or all" not in label and "(default: all)" in label
    assert "features sharing one optimisation (default: 8)" in label


def test_a_flag_name_shared_by_nested_fields_is_refused():
    @dataclass
    class Clash(Config):
        eval_batch_size: int = 1
        performance: Inner = field(default_factory=Inner)

    with pytest.raises(TypeError, match="eval_batch_size"):
        ConfigFlags(Clash).add(argparse.ArgumentParser())


def test_every_config_field_of_the_commands_has_a_flag_with_help():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    for command, flags in (("synthetic", [LABEL_FLAGS]),
                           ("label", [LABEL_FLAGS, CACHE_FLAGS, EXAMPLE_FLAGS])):
        dests = {a.dest: a for a in sub[command]._actions}  # noqa: SLF001
        for cf in flags:
            for path, _, _ in cf._leaves():  # noqa: SLF001
                action = dests[cf.dest_prefix + path[-1]]
                assert action.help, (command, path)
    label = {a.dest: a for a in sub["label"]._actions}  # noqa: SLF001
    assert label["cache_batch_size"].option_strings == ["--cache-batch-size"]
    assert label["cache_overwrite"].option_strings == ["--overwrite-cache",
                                                       "--no-overwrite-cache"]
    assert label["examples_seed"].option_strings == ["--example-seed"]
    assert label["sampler"].choices == ("balanced", "confusion")
    assert label["prediction"].choices == ("two_way", "full_vocab")


def test_label_command_flags_build_its_three_configs():
    argv = ["label", "--corpus", "c.txt", "--evaluator", "toy", "--out", "o",
            "--cache-batch-size", "3", "--batch-size", "6", "--example-seed", "4", "--seed",
            "5", "--overwrite-cache", "--no-use-cache", "--eval-batch-size", "8",
            "--max-rows-per-pass", "2", "--restarts", "[]", "--sampler", "confusion",
            "--cache-dir", "/tmp/c", "--no-prepend-bos", "--threshold", "0.5"]
    args = build_parser().parse_args(argv)
    label = LABEL_FLAGS.build(args)
    want = LabelConfig()
    want = dataclasses.replace(want, batch_size=6, seed=5, restarts=(), sampler="confusion",
                               threshold=0.5)
    for key, value in (("use_cache", False), ("eval_batch_size", 8), ("max_rows_per_pass", 2)):
        holder = label.performance if hasattr(label, "performance") else label
        assert getattr(holder, key) == value
    assert label.result_settings() == want.result_settings()
    assert CACHE_FLAGS.build(args) == CacheConfig(batch_size=3, overwrite=True,
                                                  cache_dir="/tmp/c", prepend_bos=False)
    assert EXAMPLE_FLAGS.build(args) == ExampleConfig(seed=4)


def test_synthetic_flags_override_the_preset():
    args = build_parser().parse_args(["synthetic", "numbers", "--evaluator", "toy", "--lr",
                                      "0.7", "--no-stop-early"])
    cfg = LabelConfig.preset("numbers", **LABEL_FLAGS.overrides(args))
    assert cfg.lr == 0.7 and cfg.stop_early is False and cfg.batch_size == 20


def test_invalid_config_is_one_line_exit_2_no_traceback(capsys):
    code = main(["synthetic", "animals", "--evaluator", "toy", "--holdout-fraction", "1.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tokenlabel: error: LabelConfig: holdout_fraction must be in [0, 1)")
    code = main(["label", "--corpus", "x.txt", "--evaluator", "toy", "--out", "o",
                 "--cache-batch-size", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CacheConfig: batch_size must be >= 1" in err
    with pytest.raises(SystemExit) as exc:
        main(["synthetic", "animals", "--evaluator", "toy", "--sampler", "random"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'random'" in err and "'balanced', 'confusion'" in err
