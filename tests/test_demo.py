"""The README's demo command keeps working: it relays a post and shows it."""

from __future__ import annotations

import subprocess
import sys

from tests.listd_env import ROOT


def test_demo_relays_a_post_to_each_subscriber() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "received by bob@example.test" in result.stdout
    assert "received by carol@example.test" in result.stdout
    assert "received by alice@example.test" not in result.stdout
    assert "body bytes identical to the original: True" in result.stdout
