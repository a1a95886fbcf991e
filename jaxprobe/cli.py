"""The ``jaxprobe`` command. Thin: parse arguments, load the config, call a stage, print its result.

User mistakes (``JaxprobeError``) end with exit code 2 and one clear message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxprobe.errors import JaxprobeError

DEMO_CONFIG = "demo"


def cmd_data_build(args: argparse.Namespace) -> None:
    from jaxprobe import data

    summary = data.build(args.name, args.manual_dir, args.data_dir, args.config, rebuild=args.rebuild)
    print(summary.table())


def cmd_data_info(args: argparse.Namespace) -> None:
    from jaxprobe import data

    summary = data.info(args.name, args.data_dir, args.config)
    print(json.dumps(summary.to_json(), indent=1) if args.json else summary.table())


def cmd_data_list(args: argparse.Namespace) -> None:
    from jaxprobe import data

    for name, cls in data.DATASETS.items():
        configs = ", ".join(c.name for c in cls.BUILDER_CONFIGS) or "-"
        first_line = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:18s} {first_line}\n{'':18s} configs: {configs}")


def cmd_demo(args: argparse.Namespace) -> None:
    overrides = list(args.set) + ([f"workdir={args.workdir}"] if args.workdir else [])
    _run_config(DEMO_CONFIG, overrides, "demo")


def cmd_run(args: argparse.Namespace) -> None:
    _run_config(args.config, args.set, f"run {args.config}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from jaxprobe.run import run_all
    from jaxprobe.sweep import pick_cells, run_sweep, sweep_cells

    if args.list:
        for number, name in enumerate(sweep_cells(args.config_list)):
            print(f"{number:3d}  {name}")
        return 0
    pick_cells(sweep_cells(args.config_list), args.cell)  # a bad --cell is refused before any work
    def run_locked(config):  # one writer per cell's work directory, as for `run`
        with _workdir_lock(config.workdir, f"sweep {args.config_list}"):
            return run_all(config)

    results = run_sweep(args.config_list, args.set, args.cell, args.status_dir, run_locked)
    failed = [name for name, entry in results.items() if entry["status"] != "done"]
    print(f"\n{len(results) - len(failed)} of {len(results)} cells done" + (f"; failed: {', '.join(failed)}"
                                                                              if failed else ""))
    return 1 if failed else 0


def cmd_extract(args: argparse.Namespace) -> None:
    from jaxprobe.capture.extract import run_extract
    from jaxprobe.config import load_config
    config = load_config(args.config, args.set)
    with _workdir_lock(config.workdir, f"extract {args.config}"):
        print(f"features written to {run_extract(config)}")


def _workdir_lock(workdir: str, command: str):
    """The work directory's lock, held by the process that writes files (process 0 of a multi-process job: the
    others work on the same directory as part of the same run)."""
    import contextlib

    import jax

    from jaxprobe.workdir import directory_lock

    if jax.distributed.is_initialized() and jax.process_index() != 0:
        return contextlib.nullcontext()
    return directory_lock(workdir, command)


def _run_config(name: str, overrides: list[str], command: str) -> None:
    from jaxprobe.config import load_config
    from jaxprobe.run import run_all
    from jaxprobe.workdir import BEFORE_AFTER_FILE, SCORES_FILE

    config = load_config(name, overrides)
    with _workdir_lock(config.workdir, command):
        report = run_all(config)
    if (report.parent / SCORES_FILE).is_file():
        print("\n" + json.dumps(json.loads((report.parent / SCORES_FILE).read_text())["profile"], indent=1))
    else:  # before -> fine-tune -> after: both profiles
        print("\n" + json.dumps(json.loads((report.parent / BEFORE_AFTER_FILE).read_text())["profiles"], indent=1))
    print(f"\nreport: {report}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from jaxprobe.config import load_config
    from jaxprobe.finetune.stage import run_finetune
    from jaxprobe.workdir import FINETUNE_DIR

    config = load_config(args.config, args.set)
    with _workdir_lock(config.workdir, f"finetune {args.config}"):
        summary = run_finetune(config)
    for part, record in summary.items():
        kept = record.get("kept") or {}
        print(f"{part}: kept step {kept.get('step')} (val accuracy {kept.get('accuracy', float('nan')):.3f})")
    print(f"fine-tuning written to {Path(config.workdir) / FINETUNE_DIR}")


def _stage_config(args: argparse.Namespace, stage: str):
    """The config of a standalone stage (the work directory's own unless --config), checked against the
    settings the earlier stages were made with."""
    from jaxprobe.errors import FeatureError
    from jaxprobe.run import check_earlier_stages, workdir_config

    if not Path(args.workdir).is_dir():
        raise FeatureError(f"no work directory {args.workdir}; `jaxprobe run CONFIG` (or `extract`) makes one")
    config = workdir_config(args.workdir, args.config, args.set)
    check_earlier_stages(Path(args.workdir), config, stage)
    return config


def cmd_probe(args: argparse.Namespace) -> None:
    import copy

    from jaxprobe.config import apply_override, validate_config
    from jaxprobe.probes.run import enable_compilation_cache
    from jaxprobe.run import probe_stage
    from jaxprobe.workdir import PROBES_FILE, directory_lock

    enable_compilation_cache()
    recorded = _stage_config(args, "probe")
    config = recorded
    if args.sites:  # a one-off selection: the manifest keeps the work directory's own probe.sites
        config = copy.deepcopy(recorded)
        apply_override(config, f"probe.sites={tuple(args.sites)!r}")
        validate_config(config)
    with directory_lock(args.workdir, "probe"):
        rows = probe_stage(Path(args.workdir), config, recorded)
    chosen = rows[rows.selected].pivot_table(index="site", columns="kind", values="accuracy", sort=False)
    print(chosen.round(3).to_string())
    print(f"\n{len(rows)} probe rows written to {Path(args.workdir) / PROBES_FILE}")


def cmd_score(args: argparse.Namespace) -> None:
    from jaxprobe.run import score_stage
    from jaxprobe.workdir import directory_lock

    config = _stage_config(args, "score")
    with directory_lock(args.workdir, "score"):
        report = score_stage(Path(args.workdir), config)
    print(f"report written to {report}")


def cmd_tiny_checkpoint(args: argparse.Namespace) -> None:
    """Write a tiny checkpoint; a non-empty target is refused, and --force replaces only a checkpoint."""
    import shutil
    import tempfile

    from jaxprobe.errors import CheckpointError
    from jaxprobe.families.registry import family_for_model_type

    family = family_for_model_type(args.model_type)

    out = Path(args.out)
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not args.force:
        raise CheckpointError(f"{out} already exists and is not empty; choose a new directory, or pass --force to "
                              "replace the checkpoint in it")
    if occupied and not (out / "config.json").is_file():
        raise CheckpointError(f"{out} is not empty and holds no checkpoint (no config.json); --force replaces only a "
                              "checkpoint: choose a new or empty directory")
    if not occupied:
        path = family.tiny_checkpoint(out, args.model_type, args.seed)
    else:  # write beside it, then swap, so a failed write leaves the old checkpoint in place
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            family.tiny_checkpoint(staging, args.model_type, args.seed)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(out)
        staging.rename(out)
        path = out
    print(f"tiny {args.model_type} checkpoint written to {path}")


def cmd_convert(args: argparse.Namespace) -> None:
    from jaxprobe.families.loading import converter_for
    from jaxprobe.weights.cache import convert_checkpoint

    result = convert_checkpoint(args.src, args.out, args.dtype, converter_for=converter_for, revision=args.revision)
    print(f"{'cache hit' if result.hit else 'converted'}: {result.entry}")


def cmd_models(args: argparse.Namespace) -> None:
    from jaxprobe.families.registry import models_table

    table = models_table()
    if args.json:
        print(json.dumps(table, indent=1))
        return
    for entry in table:
        print(f"{entry['family']:10s} model_types: {', '.join(entry['model_types'])}")
        print(f"{'':10s} study models: {', '.join(entry['study_models']) or '-'}")


def cmd_parity(args: argparse.Namespace) -> int:
    from jaxprobe.parity import run_parity

    report = run_parity(args.src, args.atol)
    print(report.table())
    return 0 if report.passed else 1


def cmd_compare(args: argparse.Namespace) -> None:
    from jaxprobe.report.compare import compare_runs

    page = compare_runs(args.workdirs, args.out, log=lambda message: print(message, file=sys.stderr))
    print(f"comparison written to {page}")


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="convert a HF checkpoint (dir or hub id) into cached Flax params")
    convert.add_argument("src", help="checkpoint directory or hub id")
    convert.add_argument("--out", required=True, help="cache directory")
    convert.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    convert.add_argument("--revision", help="pinned hub revision (recorded in the cache manifest)")
    convert.set_defaults(func=cmd_convert)
    parity = commands.add_parser("parity", help="compare every site with transformers' PyTorch model (needs torch)")
    parity.add_argument("src", help="checkpoint directory")
    parity.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed at any site")
    parity.set_defaults(func=cmd_parity)
    from jaxprobe.families.registry import supported_model_types

    tiny = commands.add_parser("tiny-checkpoint", help="write a tiny random HF-format checkpoint (offline, no torch)")
    tiny.add_argument("model_type", choices=supported_model_types(), help="config.json model_type to write")
    tiny.add_argument("--out", required=True, help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--force", action="store_true", help="replace the checkpoint already in --out")
    tiny.set_defaults(func=cmd_tiny_checkpoint)
    models = commands.add_parser("models", help="supported model families, their model_types and study models")
    models.add_argument("--json", action="store_true", help="print the table as JSON")
    models.set_defaults(func=cmd_models)


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="build, inspect and list datasets").add_subparsers(
        dest="data_command", required=True)
    build = data.add_parser("build", help="prepare a dataset as array_record files (rerun resumes)")
    info = data.add_parser("info", help="split x class counts of a built dataset")
    for sub in (build, info):
        sub.add_argument("name", help="dataset name (see `jaxprobe data list`)")
        sub.add_argument("--config", help="builder config, e.g. small (synthetic_lesions), breastmnist_224 (medmnist)")
        sub.add_argument("--data-dir", help="where prepared datasets live (default $JAXPROBE_DATA_DIR or "
                                            "~/jaxprobe_datasets)")
    build.add_argument("--manual-dir", help="folder holding the unpacked public download")
    build.add_argument("--rebuild", action="store_true", help="replace an already prepared copy (e.g. after the "
                                                               "download changed)")
    build.set_defaults(func=cmd_data_build)
    info.add_argument("--json", action="store_true", help="print {split: {class: count}, groups, skipped} as JSON")
    info.set_defaults(func=cmd_data_info)
    data.add_parser("list", help="datasets and their configs").set_defaults(func=cmd_data_list)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set probe.folds=3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxprobe", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    for name, func, help_text in [("run", cmd_run, "extract -> probe -> score -> report (up-to-date stages skipped)"),
                                  ("extract", cmd_extract, "capture one vector per site per image into features/"),
                                  ("finetune", cmd_finetune, "LoRA SFT and the vision-tower baseline on the train "
                                                             "split, into <workdir>/finetune/ (resumable)")]:
        stage = commands.add_parser(name, help=help_text)
        stage.add_argument("config", help="config file or name in configs/")
        _add_overrides(stage)
        stage.set_defaults(func=func)
    sweep = commands.add_parser("sweep", help="run many cells (configs/sweep.py: the study), resuming, or one "
                                              "per scheduler job with --cell")
    sweep.add_argument("config_list", help="a config whose `cells` name configs, e.g. sweep")
    sweep.add_argument("--cell", help="only this cell: its 0-based number (e.g. $SLURM_ARRAY_TASK_ID) or name")
    sweep.add_argument("--status-dir", default="runs", help="where sweep_status.json records each cell (default runs)")
    sweep.add_argument("--list", action="store_true", help="print the numbered cells and exit")
    _add_overrides(sweep)
    sweep.set_defaults(func=cmd_sweep)
    demo = commands.add_parser("demo", help="offline end-to-end demo on synthetic_lesions with a tiny model")
    demo.add_argument("--workdir", help="work directory (default from configs/demo.py)")
    _add_overrides(demo)
    demo.set_defaults(func=cmd_demo)
    stages = [("probe", cmd_probe, "train and evaluate probes on a work directory's features", "features/"),
              ("score", cmd_score, "FHS, failure modes and report.html from a work directory's probes",
               "features/ and probes.parquet")]
    for name, func, help_text, needs in stages:
        stage = commands.add_parser(name, help=help_text)
        stage.add_argument("workdir", help=f"work directory holding {needs}")
        stage.add_argument("--config", help="config file or name (default: the work directory's own, from its "
                                            "manifest.json)")
        _add_overrides(stage)
        stage.set_defaults(func=func)
        if name == "probe":
            stage.add_argument("--sites", action="append", metavar="GLOB",
                               help="probe only the sites matching this glob (repeatable), e.g. 'llm.*'; the other "
                                    "sites' rows in probes.parquet are kept (probe.sites)")
    _add_model_commands(commands)
    compare = commands.add_parser("compare", help="tables, overlay and profiles of several runs side by side")
    compare.add_argument("workdirs", nargs="+", help="work directories of finished runs")
    compare.add_argument("--out", required=True, help="output directory")
    compare.set_defaults(func=cmd_compare)
    return parser


DISTRIBUTED_COMMANDS = ("extract", "run", "demo", "sweep")  # may run as one process of a multi-process job


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in DISTRIBUTED_COMMANDS:
            from jaxprobe.parallel import initialize_distributed

            initialize_distributed()
        return int(args.func(args) or 0)
    except JaxprobeError as error:
        if args.debug:
            raise
        print(f"jaxprobe: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
