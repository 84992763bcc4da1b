"""``tarot-motion --help`` builds its parser without importing torch (instant start; commands import it)."""

import subprocess
import sys


def test_help_does_not_import_torch():
    code = "import sys, tarot_motion.cli as c; c.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
