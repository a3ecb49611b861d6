"""The ``ChorusCircuitOpen`` alert rule (deploy/prometheus/alerts.yml) under promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
PROMTOOL = shutil.which("promtool")
DESCRIPTION = (
    "Calls to openai go straight to each agent's next provider (or fail where it has none) since"
    " its breaker opened; a probe call goes every CHORUS_CIRCUIT_COOLDOWN_S. See chorus"
    " providers list; chorus providers reset openai closes it by hand."
)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_circuit_open_alert_fires_after_two_minutes_open_and_not_for_a_blip(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = tmp_path / "alerts.yml"
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", rules)
    alert = {
        "alertname": "ChorusCircuitOpen",
        "exp_labels": {"severity": "warning", "provider": "openai"},
    }
    test = {
        "rule_files": [rules.name],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                # two workers report the same fleet-wide state; anthropic opens for 30 s only
                "input_series": [
                    {
                        "series": 'chorus_circuit_state{provider="openai",instance="w1"}',
                        "values": "0 0 2 2 1 2 2 2 2 2 0 0",
                    },
                    {
                        "series": 'chorus_circuit_state{provider="openai",instance="w2"}',
                        "values": "0 0 2 2 1 2 2 2 2 2 0 0",
                    },
                    {
                        "series": 'chorus_circuit_state{provider="anthropic",instance="w1"}',
                        "values": "0 2 0 0 0 0 0 0 0 0 0 0",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "ChorusCircuitOpen", "exp_alerts": []},
                    {"eval_time": "2m30s", "alertname": "ChorusCircuitOpen", "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": "ChorusCircuitOpen",
                        "exp_alerts": [
                            {
                                "exp_labels": alert["exp_labels"],
                                "exp_annotations": {
                                    "summary": "Circuit breaker of openai is open",
                                    "description": DESCRIPTION,
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m30s", "alertname": "ChorusCircuitOpen", "exp_alerts": []},
                ],
            }
        ],
    }
    spec = tmp_path / "circuit_test.yml"
    spec.write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", spec.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
