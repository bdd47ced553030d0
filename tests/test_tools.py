"""tools/pause_training.py (a development tool, not installed): it pauses only the processes its pattern
names, for as long as the wrapped command runs, and always resumes them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO

TOOL = REPO / "tools" / "pause_training.py"


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_pause_training_pauses_the_pattern_during_the_command_and_resumes(tmp_path):
    marker = f"splinecam-pause-test-{uuid.uuid4().hex}"  # matches this test's sleeper only
    sleeper = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", marker])
    try:
        seen = tmp_path / "seen"
        probe = (f"import time; from pathlib import Path; time.sleep(1.5); "
                 f"t = Path('/proc/{sleeper.pid}/stat').read_text(); Path({str(seen)!r}).write_text(t[t.rindex(')') + 2])")
        r = subprocess.run([sys.executable, str(TOOL), "--pattern", marker, "--every", "0.2", "--",
                            sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert seen.read_text() == "T", r.stderr  # stopped while the command ran
        assert f"paused [{sleeper.pid}]" in r.stderr and f"resumed [{sleeper.pid}]" in r.stderr
        deadline = time.time() + 5
        while _state(sleeper.pid) == "T" and time.time() < deadline:
            time.sleep(0.05)
        assert _state(sleeper.pid) in "SR"  # running again
        # the command's exit status is the wrapper's
        r = subprocess.run([sys.executable, str(TOOL), "--pattern", marker, "--", sys.executable, "-c",
                            "raise SystemExit(3)"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3
    finally:
        sleeper.kill()
        sleeper.wait()
