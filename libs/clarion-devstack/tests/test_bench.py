"""The benchmark report: rendering of measured figures (no benchmark is run here)."""

from __future__ import annotations

import json
from pathlib import Path

from clarion_devstack.commands.bench import read_service_figures, render_markdown


def _result() -> dict[str, object]:
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11", "system": "Linux"},
        "started": "2026-01-01T00:00:00+00:00",
        "fixed_rates": {
            "100": {
                "achieved_rate": 100.0,
                "p50_ms": 9.5,
                "p95_ms": 20.0,
                "p99_ms": 31.25,
                "lost": 0,
                "duplicated": 0,
            }
        },
        "highest_sustained_rate": 750.0,
        "fanout": {"events": 10, "notifications": 200, "seconds": 2.0, "notifications_per_s": 100},
        "peak_rss_mib": {"aggregator": 150.4, "ingest-api": None},
    }


def test_report_shows_rates_rss_and_service_figures(tmp_path: Path) -> None:
    (tmp_path / "aggregator.json").write_text(
        json.dumps(
            {
                "aggregator_events_per_second_median": 5123,
                "aggregator_cpu_us_per_event_median": 161.5,
                "fanout_recipients": 100000,
                "fanout_seconds_median": 12.34,
            }
        )
    )
    (tmp_path / "realtime-gateway.json").write_text(
        json.dumps(
            {"connections": 10000, "rss_per_connection_kib": 14.61, "frames_per_second_median": 1}
        )
    )
    result = _result()
    result["services"] = read_service_figures(tmp_path)
    assert set(result["services"]) == {"aggregator", "realtime-gateway"}  # type: ignore[arg-type]
    text = render_markdown(result)
    assert "| 100/s | 100/s | 9.5 | 20.0 | 31.2 | 0 | 0 |" in text
    assert "**750 events/s**" in text
    assert "| aggregator | 150 |" in text
    assert "| ingest-api | - |" in text
    assert "| aggregator | 5,123 | events/s" in text
    assert "to fan one announcement out to 100,000 users" in text
    assert "| realtime-gateway | 14.6 | KiB per idle authenticated connection at 10,000" in text
    assert "inbox row" not in text  # no ingest-api figures were given


def test_report_without_service_figures_has_no_service_section() -> None:
    assert read_service_figures(None) == {}
    assert "Per-service" not in render_markdown(_result())
