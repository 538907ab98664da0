"""benchmarks/cluster_sim.py on a tiny scale, so that it keeps working and its numbers stay sane.

The full run (100 and 500 members) is a benchmark; this forms a 10-member cluster
and runs each scenario for a few simulated seconds.
"""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from rig.cluster.membership import SwimConfig

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster_sim.py"
_SPEC = importlib.util.spec_from_file_location("cluster_sim", _PATH)
cluster_sim = importlib.util.module_from_spec(_SPEC)
sys.modules["cluster_sim"] = cluster_sim  # ClusterSim.clone pickles by module name
_SPEC.loader.exec_module(cluster_sim)

N = 10
LATENCY = 0.001


@pytest.fixture(scope="module")
def formed():
    sim, formed_at = cluster_sim.form_cluster(N, seed=3, latency=LATENCY, settle=5.0)
    assert formed_at < 5.0
    assert sim.converged()
    return sim


def test_killed_member_is_dead_everywhere_in_time(formed):
    result = cluster_sim.measure_detection(formed, kills=2, seed=4)
    cfg = SwimConfig()
    floor = cfg.suspicion_min_multiplier * max(1.0, math.log10(N)) * cfg.probe_interval
    assert len(result["kills"]) == 2
    for kill in result["kills"]:
        assert 0 < kill["first_suspect"] < 5.0
        # nobody may declare it dead before the suspicion timeout has run out
        assert kill["first_dead"] >= kill["first_suspect"] + floor - 0.2
        assert kill["first_dead"] <= kill["all_dead"] < 30.0
    assert result["false_deads"] == 0
    assert formed.killed == {}  # the scenario ran on a copy


def test_steady_state_is_quiet_and_interest_reaches_everyone(formed):
    w = cluster_sim.run_window(formed, duration=35.0, interest_changes=10, count_bytes=True)
    assert w["false_suspicions"] == 0 and w["false_deads"] == 0 and w["episodes"] == 0
    assert w["refutations"] == 0
    assert w["converged_at_end"]
    # one probe (ping + ack) per member per second, plus a push-pull every ~30 s
    assert 1.5 < w["msgs_per_member_s"] < 3.0
    assert w["by_type_per_member_s"]["ping"] == pytest.approx(1.0, abs=0.1)
    assert 100 < w["bytes_per_member_s"] < 5000
    assert w["interest_changes"] == 10
    assert w["interest_missed"] == 0 and w["interest_timeouts"] == 0
    assert max(w["interest_delivered"]) == pytest.approx(LATENCY)
    assert max(w["interest_confirmed"]) == pytest.approx(2 * LATENCY)


def test_same_seed_same_numbers(formed):
    a = cluster_sim.run_window(formed, duration=10.0, loss=0.2, model="drop", seed=7)
    b = cluster_sim.run_window(formed, duration=10.0, loss=0.2, model="drop", seed=7)
    for key in ("lost", "false_suspicions", "episodes", "msgs_per_member_s"):
        assert a[key] == b[key]


def test_heavy_drop_loss_is_counted_as_false_suspicion(formed):
    """The counters are not stuck at zero: 30% UDP-like loss must cause suspicions."""
    w = cluster_sim.run_window(formed, duration=30.0, loss=0.3, model="drop")
    assert w["lost"] > 0
    assert w["episodes"] > 0
    assert w["false_suspicions"] >= w["episodes"]
    assert w["refutations"] > 0  # the suspected members heard of it and refuted
    assert w["false_suspicions_per_member_h"] == pytest.approx(
        w["false_suspicions"] / N / (30.0 / 3600)
    )


def test_tcp_loss_delays_but_delivers(formed):
    w = cluster_sim.run_window(formed, duration=30.0, loss=0.05, model="tcp", interest_changes=10)
    assert w["lost"] > 0
    assert w["false_deads"] == 0
    assert w["interest_missed"] == 0
    # a lost delta arrives an RTO (or a few doubled RTOs) later, never sooner
    assert all(t == pytest.approx(LATENCY) or t >= 0.2 for t in w["interest_delivered"])
    assert max(w["interest_confirmed"]) <= cluster_sim.ACK_TIMEOUT


def test_tcp_model_keeps_each_link_in_order():
    sim = cluster_sim.ClusterSim(3, seed=1, latency=LATENCY)
    sim.set_loss(0.5, "tcp")
    a, b, c = sim.names
    sim.send(a, [(b, {"type": "ping", "seq": i}) for i in range(50)], swim=False)
    sim.send(a, [(c, {"type": "ping", "seq": 99})], swim=False)
    on_ab = sorted((seq, at) for at, seq, _, dst, _ in sim.heap if dst == b)
    times = [at for _, at in on_ab]
    assert times == sorted(times)
    assert times[-1] > times[0]  # some were lost and held the ones behind them
    assert sim.lost > 0


def test_fanout_measures_something():
    result = cluster_sim.measure_fanout(3, events=200)
    assert result["frame_bytes"] == pytest.approx(300, abs=10)
    assert result["us_per_event"] > 0 and result["events_per_s"] > 0
    assert result["short_writes"] == 0


def test_report_formats(formed):
    args = cluster_sim.parse_args(
        ["--sizes", "5", "--duration", "5", "--steady", "5", "--kills", "1", "--losses", "0.05"]
    )
    results = [cluster_sim.run_size(5, args)]
    table = cluster_sim.format_membership(results, args)
    assert "n=5" in table and "tcp 5%" in table and "drop 5%" in table
    assert cluster_sim.fleet_paragraph(results, [])
