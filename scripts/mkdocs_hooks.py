"""mkdocs hooks of the TAROT docs site.

``on_files`` adds one generated API page per package (``api/<import name>.md``) with a mkdocstrings block for every
module found under ``packages/<dist>/src/<import name>/``. The pages are built from the source tree at build time, so a
module added by a package shows up without editing the docs; griffe reads the code statically, so the docs venv needs
neither torch nor the packages installed.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]

# import name -> (distribution folder, title, intro, modules listed first in this order)
PACKAGES = {
    "tarot": (
        "tarot-core",
        "tarot (tarot-core)",
        "The selection engine: gradient features, the feature store, whitening, streamed scoring, entropic OT, the "
        "selectors, potential weighting, the `select()` front door and its `SelectionResult`, reports and the "
        "`tarot` command. [Concepts](../concepts.md) explains the method behind these functions.",
        [  # the pipeline order: featurize -> store -> whiten -> score -> select -> weight -> report
            "api",
            "options",
            "result",
            "features.gradients",
            "features.featurize",
            "features.projection",
            "features.embeddings",
            "features.store",
            "features.distributed",
            "features.merge",
            "features.outofcore",
            "geometry.whitening",
            "geometry.scoring",
            "ot",
            "selectors",
            "selectors.base",
            "selectors.baselines",
            "selectors.fixed_size",
            "selectors.otm",
            "selectors.tsds",
            "weighting",
            "diagnostics",
            "app.report",
            "app.compare",
            "app.synthetic",
            "app.cli",
            "app.demo",
            "app.bench",
            "app.bench_featurize",
        ],
    ),
    "tarot_vision": (
        "tarot-vision",
        "tarot_vision (tarot-vision)",
        "Vision adapters: Cityscapes/GTA5 readers and converters, segmenters (torchvision or mmsegmentation), "
        "classification data and models, the LDS check, the embedded demo and the `tarot-vision` command. "
        "Walk-through: [vision tutorial](../tutorials/vision.md).",
        [
            "cli",
            "config",
            "segdata",
            "labels",
            "segpipe",
            "seg_models",
            "mmseg_backend",
            "mmcv_shim",
            "cls_data",
            "cls_models",
            "lds",
            "demo",
        ],
    ),
    "tarot_motion": (
        "tarot-motion",
        "tarot_motion (tarot-motion)",
        "Motion-prediction adapters: ScenarioNet reader, MetaDrive converter, UniTraj-style preprocessing, "
        "AutoBot-Ego, training and metrics, the pipeline on tarot-core and the `tarot-motion` command. "
        "Walk-through: [motion tutorial](../tutorials/motion.md).",
        [
            "cli",
            "config",
            "pipeline",
            "scenarionet",
            "convert",
            "preprocess",
            "data",
            "model",
            "featurize",
            "train",
            "metrics",
            "safe_pickle",
            "errors",
            "demo",
        ],
    ),
    "tarot_llm": (
        "tarot-llm",
        "tarot_llm (tarot-llm)",
        "LLM adapters: LESS-style jsonl data and converters, chat templates, MMLU/BBH targets, Adam-preconditioned "
        "LoRA gradients, LoRA training, offline lm-eval evaluation, the pipeline and the `tarot-llm` command. "
        "Walk-through: [LLM tutorial](../tutorials/llm.md).",
        [
            "cli",
            "config",
            "pipeline",
            "data",
            "io",
            "templates",
            "targets",
            "models",
            "optim_state",
            "training",
            "evaluation",
            "demo",
        ],
    ),
}


def discover_modules(import_name: str, dist: str) -> list[str]:
    """Dotted module names (relative to the package) of every public ``.py`` file, subpackages included."""
    base = ROOT / "packages" / dist / "src" / import_name
    found = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if not parts:
                continue
        if any(p.startswith("_") for p in parts):
            continue
        if "configs" in parts:
            continue
        found.append(".".join(parts))
    return found


def api_page(import_name: str) -> str:
    dist, title, intro, preferred = PACKAGES[import_name]
    modules = discover_modules(import_name, dist)
    ordered = [m for m in preferred if m in modules] + [m for m in modules if m not in preferred]
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "Generated from the docstrings of `packages/" + dist + "/src/" + import_name + "` at build time.",
        "",
    ]
    for mod in ordered:
        lines += [f"::: {import_name}.{mod}", ""]
    return "\n".join(lines)


def _load_options_module():
    """``tarot.options`` straight from the source tree: it imports only the standard library, so the docs venv
    (no numpy, no torch) can read the option definitions themselves instead of a hand-copied list."""
    import importlib.util

    path = ROOT / "packages" / "tarot-core" / "src" / "tarot" / "options.py"
    spec = importlib.util.spec_from_file_location("_tarot_options_for_docs", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def options_page() -> str:
    """Every selector's and stage's options (kind, default, help) from the classes in ``tarot.options``."""
    mod = _load_options_module()
    lines = [
        "# Options of every method and stage",
        "",
        "Generated at build time from the option classes in `tarot.options` (the definitions `tarot.select`, the "
        "`tarot select --set` flags and the domain configs' `select.options` are all checked against). A misspelt or "
        "out-of-range option is an error that lists the valid ones; the resolved options are saved in every "
        "result's `config.json` (`selector_options`).",
        "",
    ]
    groups = [("Selectors", mod.SELECTOR_OPTIONS, "method"), ("Stages of `tarot.select`", mod.STAGE_OPTIONS, "stage")]
    for title, classes, word in groups:
        lines += [f"## {title}", ""]
        for name, cls in classes.items():
            doc = " ".join((cls.__doc__ or "").split())
            lines += [f"### `{name}` ({word}, `tarot.options.{cls.__name__}`)", "", doc, ""]
            specs = cls.specs()
            if not specs:
                lines += ["No options of its own.", ""]
                continue
            lines += ["| option | values | default | meaning |", "|---|---|---|---|"]
            for spec in specs.values():
                lines.append(f"| `{spec.name}` | {_cell(spec.kind())} | `{spec.default!r}` | {_cell(spec.help)} |")
            lines.append("")
    return "\n".join(lines)


def on_files(files, config, **kwargs):
    for import_name in PACKAGES:
        files.append(File.generated(config, f"api/{import_name}.md", content=api_page(import_name)))
    files.append(File.generated(config, "api/options.md", content=options_page()))
    return files


BENCH_MARKER = "<!-- bench-table -->"
BENCH_FILE = ROOT / "benchmarks" / "results" / "bench.md"


def bench_section() -> str:
    """The measured table written by ``nox -s bench`` (benchmarks/results/bench.md), or a note that there is none."""
    if BENCH_FILE.is_file():
        text = BENCH_FILE.read_text(encoding="utf-8").strip()
        # the file's own title (if any) is demoted below this page's headings
        lines = [("###" + line.lstrip("#")) if line.startswith("#") else line for line in text.splitlines()]
        return (
            "The table below is `benchmarks/results/bench.md` as written by the last `nox -s bench` run in this "
            "checkout (included when the site was built):\n\n" + "\n".join(lines)
        )
    return (
        "No benchmark results were present when this site was built: `nox -s bench` writes "
        "`benchmarks/results/bench.md` (and `bench.csv`), and the next docs build includes that table here."
    )


def on_page_markdown(markdown, page, config, files, **kwargs):
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, bench_section())
    return markdown
