"""The command's arguments: the parser, the `Case`s they ask for, checked before TensorFlow."""

import argparse
import ast
import json
import os
import re
import sys
from typing import NamedTuple

import tfp_gradest
from tfp_gradest import problems

__all__ = [
    "BACKENDS",
    "Case",
    "DEFAULT_PROBLEM",
    "FIT_STEPS",
    "PROG",
    "SHOWCASE",
    "backend",
    "build_parser",
    "cases",
    "estimator_config",
    "split_estimators",
]


class Case(NamedTuple):
    """One comparison: a problem, the estimators (the first is the baseline), sizes, where."""

    problem: str
    estimators: tuple
    sample_size: int | None = 1  # None: the problem's default_sample_size
    importance_sample_size: int | None = 1  # None: its default_importance_sample_size
    at: str = "init"  # "init" or "fitted"
    draws: int = 1000
    noise: str = "iid"  # the estimators' base noise: "iid" or "rqmc"


SHOWCASE = (
    Case("toy_gaussian", ("iwae", "iwae_stl", "iwae_dreg"), 1, 64, "init", 500),
    Case("linear_regression", ("reparameterization", "stl"), 1, 1, "fitted", 500),
    Case(
        "bnn_layers",
        ("reparameterization", "local_reparameterization", "r2g2"),
        1,
        1,
        "init",
        200,
    ),
)
FIT_STEPS = 300
DEFAULT_DRAWS = 1000
DEFAULT_PROBLEM = "gaussian"  # with --estimators, -S, -K, --at or --noise but no --problem

BACKENDS = problems.base.SUBSTRATES  # TFP's substrates: --backend tensorflow or jax

PROG = "tfp-gradest"  # the console script; `python -m tfp_gradest` passes its own


def build_parser(prog=PROG, description=None):
    """The `argparse` parser of `compare` and `list`; `description`: `compare --help`'s text."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(description or "").split("\n\n")[0] or None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {tfp_gradest.__version__}"
    )
    commands = parser.add_subparsers(dest="command")
    compare_parser = commands.add_parser(
        "compare",
        help="compare gradient estimators (no --problem: the showcase)",
        description=description,
        formatter_class=_HelpFormatter,
    )
    compare_parser.add_argument(
        "--problem",
        default=None,
        help=f"one of: {', '.join(problems.names())}; none: the showcase (three cases), or "
        f"{DEFAULT_PROBLEM!r} when --estimators, -S, -K, --at or --noise is given",
    )
    compare_parser.add_argument(
        "--estimators",
        default=None,
        help="comma-separated estimator names, the first one the baseline, each with options "
        "as a call if it takes any, e.g. 'score_function(baseline=leave_one_out)'; default: the "
        f"problem's own set (`{prog} list` prints the names)",
    )
    compare_parser.add_argument(
        "-S",
        "--sample-size",
        type=int,
        default=None,
        help="objectives averaged; default: the problem's own (1, or 8 for the leave-one-out "
        "estimators of latent_bits)",
    )
    compare_parser.add_argument(
        "-K",
        "--importance-sample-size",
        type=int,
        default=None,
        help="samples per objective (multi-sample estimators: iwae, iwae_dreg, ...); default: "
        "the problem's own (1, or 16 for hierarchical_gaussian)",
    )
    compare_parser.add_argument(
        "--draws",
        type=int,
        default=None,
        help=f"gradient draws per estimator; default: {DEFAULT_DRAWS}, or the showcase's own "
        f"({', '.join(str(c.draws) for c in SHOWCASE)})",
    )
    compare_parser.add_argument(
        "--at",
        choices=("init", "fitted"),
        default="init",
        help="draw the gradients at the problem's initialisation, or after --fit-steps "
        "Adam steps on the ELBO",
    )
    compare_parser.add_argument(
        "--fit-steps", type=int, default=FIT_STEPS, help="steps of fitting for --at fitted"
    )
    compare_parser.add_argument(
        "--noise",
        choices=("iid", "rqmc"),
        default="iid",
        help="the estimators' base normals: independent draws, or randomised quasi-Monte "
        "Carlo (one shifted Sobol point per objective: pathwise estimators only; a "
        "problem's default set then keeps its pathwise estimators, saying so)",
    )
    compare_parser.add_argument(
        "--reference-draws",
        type=int,
        default=None,
        help="draws of the Monte Carlo reference gradient where no closed form is known "
        "(0: no bias column); default: 10 x --draws",
    )
    compare_parser.add_argument(
        "--repeats", type=int, default=5, help="rounds of alternated step timing"
    )
    compare_parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="the TFP substrate the gradients are drawn on; default: the active Keras backend "
        "(KERAS_BACKEND, else ~/.keras/keras.json, else tensorflow)",
    )
    compare_parser.add_argument("--seed", type=int, default=0)
    compare_parser.add_argument(
        "--output-dir",
        default="compare_output",
        help="folder of the run's <name>.csv, .json and .png (created; checked before the run)",
    )
    compare_parser.add_argument(
        "--no-plot", action="store_true", help="skip the PNG (no matplotlib)"
    )
    compare_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show TensorFlow's own log messages"
    )
    list_parser = commands.add_parser("list", help="list the problems and estimators")
    list_parser.add_argument("-v", "--verbose", action="store_true")
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (those that depend on others say so in their help),
    and the description's lists as written."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def backend(args):
    """`--backend`, or the active Keras backend's name, read without importing Keras (or
    TensorFlow) where Keras is not imported yet; `ValueError` for a Keras backend with no
    TFP substrate (torch, numpy)."""
    if args.backend is not None:
        return args.backend
    if "keras" in sys.modules:
        name, source = sys.modules["keras"].backend.backend(), "the active Keras backend"
    elif os.environ.get("KERAS_BACKEND"):
        name, source = os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    else:
        name, source = _keras_json_backend(), "~/.keras/keras.json"
    if name not in BACKENDS:
        raise ValueError(
            f"--backend defaults to {source}, {name!r}, which has no TFP substrate: pass "
            f"--backend {' or '.join(BACKENDS)}. Received: {name!r}"
        )
    return name


def _keras_json_backend():
    """The backend Keras's config file names (as Keras reads it), else `"tensorflow"`."""
    folder = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(folder, "keras.json")) as f:
            return json.load(f).get("backend") or "tensorflow"
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def cases(args):
    """The `Case`s `args` ask for; raises `ValueError` for anything checkable without TensorFlow."""
    for flag in ("sample_size", "importance_sample_size", "fit_steps", "repeats"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(
                f"--{flag.replace('_', '-')} must be at least 1. Received: {getattr(args, flag)}"
            )
    if args.draws is not None and args.draws < 2:
        raise ValueError(
            f"--draws must be at least 2 (a variance needs two). Received: {args.draws}"
        )
    if args.reference_draws is not None and args.reference_draws < 0:
        raise ValueError(f"--reference-draws must be 0 or more. Received: {args.reference_draws}")
    estimators = None
    if args.estimators is not None:
        estimators = split_estimators(args.estimators)
        if not estimators:
            raise ValueError(f"--estimators is empty. Received: {args.estimators!r}")
        for spec in estimators:
            estimator_config(spec)  # its syntax, checked before TensorFlow is imported
    problem = args.problem
    if problem is None:
        noise = getattr(args, "noise", "iid")
        single = (estimators, args.sample_size, args.importance_sample_size, args.at, noise)
        if single == (None, None, None, "init", "iid"):
            return [c._replace(draws=args.draws or c.draws) for c in SHOWCASE]
        # --estimators, -S, -K, --at or --noise ask for one comparison: on the default problem.
        problem = DEFAULT_PROBLEM
        sys.stderr.write(f"no --problem given: comparing on {DEFAULT_PROBLEM!r}\n")
    problems.check_name(problem)
    return [
        Case(
            problem,
            estimators,  # None: the problem's default_estimators, once it is built
            args.sample_size,
            args.importance_sample_size,
            args.at,
            args.draws or DEFAULT_DRAWS,
            getattr(args, "noise", "iid"),
        )
    ]


def split_estimators(text):
    """`--estimators`'s entries: split at the commas outside parentheses, stripped."""
    entries, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            entries.append(text[start:index].strip())
            start = index + 1
    entries.append(text[start:].strip())  # the last (an unclosed call too: refused later)
    return tuple(e for e in entries if e)


_CALL = re.compile(r"^([A-Za-z_][\w-]*)\((.*)\)$", re.DOTALL)


def estimator_config(spec):
    """An estimator's name as it is, or `{"class_name", "config"}` for `name(key=value, ...)`.

    Values are Python literals (`None`, numbers, quoted strings) or else bare words taken as
    strings, so `score_function(baseline=leave_one_out)` and the table's own label
    `ScoreFunction(baseline='leave_one_out')` name the same estimator. `ValueError` for
    anything else.
    """
    if "(" not in spec and ")" not in spec:
        return spec
    match = _CALL.match(spec.strip())
    if match is None:
        raise ValueError(
            "--estimators takes names, or a name with its options as a call such as "
            f"'score_function(baseline=leave_one_out)'. Received: {spec!r}"
        )
    config = {}
    for item in split_estimators(match.group(2)):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise ValueError(
                f"--estimators: options are key=value, e.g. baseline=leave_one_out. "
                f"Received: {item!r} in {spec!r}"
            )
        try:
            config[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            config[key.strip()] = value.strip()
    return {"class_name": match.group(1), "config": config}
