"""Dashboard what-if response time: GPT-3 175B on 1024 A100-80GB (the Megatron-LM plan of
examples/gpt3-175b-1024xa100.yaml: tp 8, pp 16, dp 8, global batch 1536, full recompute).

(a) The re-simulation behind each what-if control (``simplan.dashboard.whatif.resimulate``,
    what the page calls on a change), one row per control: wall time and the step time it
    predicts against the baseline.
(b) With ``--app``: the whole page through Streamlit's AppTest: the sidebar set to that
    model and cluster, the planner run (once), then one what-if slider moved, several plan
    degrees changed (the plan editor, ``simplan.dashboard.plan_edit``), and the first jitter
    tick; the wall time of each rerun is what a user waits for.

Target (issue 7): one what-if re-simulation of a 1024-GPU GPT-3 plan in <= 2 s. Not a
test: it prints the figures.

    python benchmarks/dashboard_whatif.py [--app]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from simplan.dashboard.whatif import WhatIf, resimulate
from simplan.scenario import load_scenario, scenario_to_dict

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "gpt3-175b-1024xa100.yaml"

WHATIFS = {
    "NVLink x2": WhatIf(scales={"intra_bw": 2.0}),
    "network x2": WhatIf(scales={"nic_bw": 2.0}),
    "network x0.5": WhatIf(scales={"nic_bw": 0.5}),
    "HBM bandwidth x2": WhatIf(scales={"hbm_bw": 2.0}),
    "peak FLOP/s x2": WhatIf(scales={"flops": 2.0}),
    "HBM capacity x0.5": WhatIf(scales={"hbm": 0.5}),
    "512 GPUs (64 nodes)": WhatIf(nodes=64),
    "global batch 3072": WhatIf(global_batch=3072),
    "pp 8 (dp 16)": WhatIf(plan={"pp": 8}),
    "tp 4 (dp 16)": WhatIf(plan={"tp": 4}),
    "tp 4, pp 8, zero 1 (dp 32)": WhatIf(plan={"tp": 4, "pp": 8, "zero_stage": 1}),
}


def library() -> list[float]:
    base = scenario_to_dict(load_scenario(EXAMPLE))
    t0 = time.perf_counter()
    baseline = resimulate(base)
    print(f"baseline (cold: builds the layer graph): {time.perf_counter() - t0:.2f} s, "
          f"step {baseline.step_time_s:.3f} s, MFU {100 * baseline.mfu:.1f} %")
    walls = []
    print(f"{'what-if':<28} {'wall (s)':>9} {'step (s)':>9} {'vs baseline':>12}")
    for name, w in WHATIFS.items():
        t0 = time.perf_counter()
        r = resimulate(base, whatif=w)
        wall = time.perf_counter() - t0
        walls.append(wall)
        print(f"{name:<28} {wall:9.3f} {r.step_time_s:9.3f} {100 * (r.step_time_s / baseline.step_time_s - 1):+11.2f}%")
    print(f"what-if re-simulation: median {statistics.median(walls):.3f} s, max {max(walls):.3f} s "
          f"(target <= 2 s)")
    t0 = time.perf_counter()
    r = resimulate(base, jitter=0.05)
    print(f"with 5 % jitter (all {r.scenario['plan']['dp']} replicas simulated): {time.perf_counter() - t0:.2f} s "
          f"(outside the 2 s target: variability simulates every replica)")
    return walls


def app() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.run()
    at.selectbox(key="preset").set_value("gpt3-175b")
    at.number_input(key="nodes").set_value(128)
    at.number_input(key="global_batch").set_value(1536)
    t0 = time.perf_counter()
    at.button(key="run_planner").click().run()
    assert not at.exception, [e.value for e in at.exception]
    print(f"app: planner + first view of GPT-3 175B on 1024 GPUs: {time.perf_counter() - t0:.1f} s "
          f"({at.caption[0].value})")
    for factor in (2.0, 4.0, 0.5):
        t0 = time.perf_counter()
        at.select_slider(key="wi_nic_bw").set_value(factor).run()
        wall = time.perf_counter() - t0
        assert not at.exception, [e.value for e in at.exception]
        shown = {m.label: (m.value, m.delta) for m in at.metric}
        print(f"app: network x{factor:g} rerun {wall:.2f} s (target <= 2 s): "
              f"what-if step time {shown['What-if step time']}")
    at.select_slider(key="wi_nic_bw").set_value(1.0).run()
    for key, value in (("wi_plan_tp", 4), ("wi_plan_pp", 8)):
        if str(value) not in at.selectbox(key=key).options:
            print(f"app: {key[8:]} {value} is not offered for the planner's best plan")
            continue
        t0 = time.perf_counter()
        at.selectbox(key=key).set_value(value).run()
        assert not at.exception, [e.value for e in at.exception]
        shown = {m.label: (m.value, m.delta) for m in at.metric}
        print(f"app: {key[8:]} {value} rerun {time.perf_counter() - t0:.2f} s: what-if step time "
              f"{shown.get('What-if step time')}; notes: {[i.value for i in at.info]}")
    t0 = time.perf_counter()
    at.slider(key="wi_jitter").set_value(0.05).run()
    assert not at.exception, [e.value for e in at.exception]
    print(f"app: first jitter tick (5 %) {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    library()
    if "--app" in sys.argv[1:]:
        app()
