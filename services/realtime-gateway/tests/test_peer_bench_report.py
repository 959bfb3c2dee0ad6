"""Pure parts of the peer benchmark: percentiles, medians, ratios, the report, frame parsing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from clarion_devstack import peer_report
from clarion_devstack.commands.bench import read_peer_figures, render_markdown

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clients() -> ModuleType:
    return _load("peer_clients")


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert peer_report.percentile(values, 50) == pytest.approx(50.5)
    assert peer_report.percentile(values, 99) == pytest.approx(99.01)
    assert peer_report.percentile(values, 0) == 1.0
    assert peer_report.percentile(values, 100) == 100.0
    assert peer_report.percentile([7.0], 99) == 7.0
    assert peer_report.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert peer_report.percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        peer_report.percentile(values, 101)


def test_median_and_ratio_skip_missing_values() -> None:
    assert peer_report.median_of([3.0, None, 1.0, 2.0]) == 2.0
    assert peer_report.median_of([None, None]) is None
    assert peer_report.ratio(3000.0, 12000.0) == pytest.approx(0.25)
    assert peer_report.ratio(None, 1.0) is None
    assert peer_report.ratio(1.0, 0.0) is None


def _round(frames: float, cpu: float, missed: int) -> dict[str, float | int | None]:
    return {
        "frames_per_s": frames,
        "server_cpu_us_per_frame": cpu,
        "latency_p50_ms": 10.0,
        "latency_p99_ms": None,
        "idle_kib_per_connection": 14.0,
        "recovery_expected": 100,
        "recovery_recovered": 100 - missed,
        "recovery_missed": missed,
        "recovery_duplicated": 0,
        "reconnect_retries": missed * 3,
        "frames_missing": missed,
        "recovered_fraction": (100 - missed) / 100,
    }


def _figures() -> dict[str, object]:
    rounds = {
        peer_report.CLARION: [_round(2000, 400, 0), _round(3000, 300, 0), _round(2500, 350, 0)],
        peer_report.NODE: [_round(12000, 100, 0), _round(13000, 90, 2), _round(14000, 95, 0)],
        peer_report.PYTHON_SOCKETIO: [_round(1400, 700, 0), _round(1300, 710, 0)],
    }
    summary = peer_report.summarise(rounds)
    return {
        "summary": summary,
        "ratios": peer_report.ratios(summary),
        "config": {
            "users": 2000,
            "records": 100_000,
            "rate": 500,
            "idle_connections": 10_000,
            "rounds": 3,
        },
        "duties": ["all: the same history script"],
        "left_out": ["the aggregator"],
    }


def test_summary_takes_medians_and_sums_recovery_counts() -> None:
    summary = _figures()["summary"]
    assert isinstance(summary, dict)
    assert summary[peer_report.CLARION]["frames_per_s"] == 2500
    assert summary[peer_report.NODE]["server_cpu_us_per_frame"] == 95
    assert summary[peer_report.PYTHON_SOCKETIO]["frames_per_s"] == 1350
    assert summary[peer_report.NODE]["recovery_missed"] == 2
    assert summary[peer_report.NODE]["recovery_recovered"] == 298
    assert summary[peer_report.CLARION]["latency_p99_ms"] is None
    assert summary[peer_report.PYTHON_SOCKETIO]["rounds"] == 2


def test_ratios_are_clarion_over_each_peer() -> None:
    ratios = _figures()["ratios"]
    assert isinstance(ratios, dict)
    assert set(ratios) == {"clarion/node-socketio", "clarion/python-socketio"}
    assert ratios["clarion/node-socketio"]["frames_per_s"] == pytest.approx(2500 / 13000)
    assert ratios["clarion/python-socketio"]["server_cpu_us_per_frame"] == pytest.approx(350 / 705)
    assert ratios["clarion/node-socketio"]["latency_p99_ms"] is None


def test_report_puts_ratios_before_absolute_figures() -> None:
    lines = peer_report.render_peer_section(_figures())
    text = "\n".join(lines)
    assert lines[0] == "## Live path next to its peers"
    ratio_row = next(line for line in lines if line.startswith("| frames/s at full speed ("))
    assert ratio_row == "| frames/s at full speed (higher is better) | 0.19× | 1.85× |"
    absolute_row = next(line for line in lines if line.startswith("| frames/s at full speed |"))
    assert lines.index(ratio_row) < lines.index(absolute_row)
    assert absolute_row == "| frames/s at full speed | 2,500 | 13,000 | 1,350 |"
    assert (
        "| recovery: missed / recovered / duplicated / handshakes retried (sum of rounds) "
        "| 0 / 300 / 0 / 0 | 2 / 298 / 0 / 6 |" in text
    )
    # A figure no round measured has no ratio row, and shows "-" in the table.
    assert "p99 ms record produced → frame at client (lower" not in text
    assert "| p99 ms record produced → frame at client | - | - | - |" in text
    assert "| full-speed records whose frame never arrived (sum of rounds) | 0 | 2 | 0 |" in text
    assert "* the aggregator" in text
    assert peer_report.render_peer_section({}) == []


def test_benchmark_report_includes_the_peer_section(tmp_path: Path) -> None:
    (tmp_path / "peers.json").write_text(json.dumps(_figures()))
    result = {
        "machine": {"cpu": "x", "cores": 2, "python": "3.11", "system": "Linux"},
        "started": "now",
        "peers": read_peer_figures(tmp_path),
    }
    assert "## Live path next to its peers" in render_markdown(result)
    assert read_peer_figures(tmp_path / "missing") == {}
    assert read_peer_figures(None) == {}


def test_client_reads_offsets_of_both_protocols(clients: ModuleType) -> None:
    clarion = b'{"type":"notification.created","offset":"3fb47f7b:12","unread_count":1}'
    socketio = b'42["notification",{"type":"notification.created","offset":7,"unread_count":1}]'
    first = clients.OFFSET.search(clarion)
    assert (first.group(1), first.group(2)) == (b"3fb47f7b", b"12")
    second = clients.OFFSET.search(socketio)
    assert (second.group(1), second.group(2)) == (None, b"7")
    assert clarion.startswith(clients.NOTIFICATION_PREFIXES)
    assert socketio.startswith(clients.NOTIFICATION_PREFIXES)
    assert not b'{"type":"connected","offset":"e:0"}'.startswith(clients.NOTIFICATION_PREFIXES)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70_000])
def test_client_frames_are_masked_per_rfc_6455(clients: ModuleType, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = clients.masked(payload)
    assert frame[0] == 0x81
    assert frame[1] & 0x80
    length = frame[1] & 0x7F
    pos = 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    assert length == size
    mask = frame[pos : pos + 4]
    body = frame[pos + 4 :]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload
